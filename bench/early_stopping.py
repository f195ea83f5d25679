"""Early stopping chosen by measurement (README "Early stopping"): which validation score to monitor, and
whether to refit on training + validation rows, compared on real data by test scores.

For each protocol (``--protocols``: our speaker 5-fold, EmoBox's folds from ``--splits``) it runs the
``emodb_classical`` grid (``--methods``, default SVM + FCN on each feature set, Concatenation + PARROT on
the pair) under five settings, every one with the default validation policy ("auto") and patience:

- ``loss`` / ``uar``: early stopping monitors the validation loss / UA; the best-validation params are kept;
- ``loss+refit`` / ``uar+refit``: the same, then each member trains again on train + validation for its
  best epoch (`TrainConfig.refit`);
- ``none (50 ep.)``: no validation part (``val_policy=none``): every member trains ``epochs`` epochs on
  the whole training part and keeps its last params (the paper's 50 epochs).

and prints one Markdown table: per setting, the neural cells' WA / UA / F1 (mean over cells of each
cell's mean over seeds x folds), each neural method's UA, the SVM's UA (it fits on the same rows), and
the median best epoch over every neural member. Finished cells are reused (``--results``), so a killed
run continues where it stopped.

    python bench/early_stopping.py --features FEATURES --splits EmoBox/data --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from parrot_jax.config import load_config
from parrot_jax.grid import run_grid

SETTINGS = {  # name -> overrides
    "loss": ["train.monitor=loss", "train.refit=false"],
    "loss+refit": ["train.monitor=loss", "train.refit=true"],
    "uar": ["train.monitor=uar", "train.refit=false"],
    "uar+refit": ["train.monitor=uar", "train.refit=true"],
    "none (50 ep.)": ["val_policy=none", "train.refit=false"],
}
NEURAL = ("fcn", "concat", "parrot")


def summarise(run_dir: Path) -> dict:
    """Scores of one finished grid: neural means, per-method UA, SVM UA, median best epoch."""
    records = [json.loads(p.read_text()) for p in sorted((run_dir / "cells").glob("*.json"))]
    neural = [r for r in records if r["cell"]["method"] in NEURAL]
    mean = {m: 100 * np.mean([np.mean(r["metrics"][m]) for r in neural]) for m in ("accuracy", "uar", "macro_f1")}
    per_method = {}
    for r in records:
        per_method.setdefault(r["cell"]["method"], []).append(100 * np.mean(r["metrics"]["uar"]))
    epochs = [run["best_epoch"] for r in neural for run in r["result"]["runs"]]
    return {"mean": mean, "ua": {m: float(np.mean(v)) for m, v in per_method.items()},
            "median_best_epoch": float(np.median(epochs)), "fit": neural[0]["fold_rows"][0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", required=True, help="feature store holding emodb mfcc-stats, logmel-stats")
    parser.add_argument("--splits", default="", help="EmoBox's data folder (adds the emobox protocol)")
    parser.add_argument("--results", default="results/early_stopping")
    parser.add_argument("--protocols", default="speaker,emobox", help="speaker and/or emobox (needs --splits)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of the settings")
    parser.add_argument("--methods", default="svm,fcn,concat,parrot",
                        help="grid methods: Table 1's svm, fcn, cnn and Table 2's concat, parrot")
    args = parser.parse_args()

    wanted = args.protocols.split(",")
    protocols = [("speaker", [])] if "speaker" in wanted else []
    if "emobox" in wanted:
        if not args.splits:
            parser.error("--protocols emobox needs --splits (EmoBox's data folder)")
        protocols.append(("emobox", [f"splits={args.splits}"]))
    methods = args.methods.split(",")
    table1 = ",".join(m for m in methods if m in ("svm", "fcn", "cnn"))
    table2 = ",".join(m for m in methods if m in ("concat", "parrot"))
    rows = []
    for protocol, extra in protocols:
        for name in args.settings.split(","):
            run = f"{protocol}-{name.split(' ')[0]}"
            overrides = [f"features={args.features}", f"results={args.results}", f"run={run}", f"protocol={protocol}",
                         f"seeds={args.seeds}", f"train.epochs={args.epochs}", f"table1={table1}",
                         f"table2={table2}", "figures=", "tsne_methods=", *extra, *SETTINGS[name]]
            config, provenance = load_config("emodb_classical", overrides)
            t0 = time.perf_counter()
            run_grid(config, provenance, echo=lambda line: print(f"[{run}] {line}", flush=True))
            rows.append((protocol, name, summarise(config.run_dir), time.perf_counter() - t0))

    shown = [m for m in ("fcn", "cnn", "concat", "parrot", "svm") if m in methods]
    print(f"\nEmo-DB, mfcc-stats + logmel-stats, seeds {args.seeds}, {args.epochs} epochs, val_policy auto\n")
    print("| protocol | early stopping | WA | UA | F1 | " + " | ".join(f"UA {m}" for m in shown)
          + " | median best epoch | fit rows (fold 1) |")
    print("|" + " --- |" * (7 + len(shown)))
    for protocol, name, s, _ in rows:
        m = s["mean"]
        print(f"| {protocol} | {name} | {m['accuracy']:.2f} | {m['uar']:.2f} | {m['macro_f1']:.2f} | "
              + " | ".join(f"{s['ua'][k]:.2f}" for k in shown)
              + f" | {s['median_best_epoch']:g} | {s['fit']['fit']} of {s['fit']['train'] + s['fit']['val']} |")
    print("\nWA / UA / F1: mean over the neural cells of each cell's mean over seeds x folds; UA per method: mean "
          "over its cells. Seconds per grid: "
          + ", ".join(f"{p}/{n} {t:.0f}" for p, n, _, t in rows))


if __name__ == "__main__":
    main()
