"""How close `parrot export`'s files come to the saved model they were exported from, on real feature rows.

    python bench/export_parity.py [--epochs 5] [--out results/export_parity]

Trains every exportable kind on the demo corpus's stored features (MFCC and log-mel statistics; the paper's
model sizes; `parrot_jax.predict.train_on_corpus`, held-out 10 %), exports each as ONNX (needs the export
extra) and StableHLO, then runs every row of the corpus through the exported file in parrot predict's
batches (eval_batch_size rows, in order) and prints max |p_exported - p_saved_model| over all rows and
classes, with the file's size. Nothing is timed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from parrot_jax.corpora import generate_demo_corpus
from parrot_jax.export import export_model, onnx_runner, stablehlo_runner
from parrot_jax.extraction import extract
from parrot_jax.features import available_features, load_corpus
from parrot_jax.models import MODEL_KINDS
from parrot_jax.predict import train_on_corpus
from parrot_jax.saved_model import load_model, save_model
from parrot_jax.training import TrainConfig

ENCODERS = ["mfcc-stats", "logmel-stats"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("results/export_parity"))
    args = parser.parse_args()
    store = args.out / "features"
    if "demo" not in available_features(store):
        extract("demo", generate_demo_corpus(args.out / "corpus"), ENCODERS, store, progress=False)
    print(f"{'kind':<9} {'format':<10} {'rows':>5} {'batch':>5} {'max |dp|':>10} {'bytes':>10}")
    for kind in MODEL_KINDS:
        encoders = ENCODERS if kind not in ("fcn", "cnn") else ENCODERS[:1]
        model, _ = train_on_corpus(store, "demo", kind, encoders, TrainConfig(epochs=args.epochs))
        folder = save_model(args.out / "models" / kind, model)
        model = load_model(folder)
        data = load_corpus(store, "demo", encoders)
        rows = [np.asarray(data.matrices[e], np.float32) for e in encoders]
        size = model.eval_batch_size
        expected = np.concatenate([model.probabilities([x[i : i + size] for x in rows])
                                   for i in range(0, len(rows[0]), size)])
        for file_format in ("onnx", "stablehlo"):
            done = export_model(folder, args.out / f"{kind}.{file_format}", file_format)
            run = (onnx_runner if file_format == "onnx" else stablehlo_runner)(done.path.read_bytes())
            got = np.concatenate([run([x[i : i + size] for x in rows]) for i in range(0, len(rows[0]), size)])
            error = float(np.max(np.abs(got - expected)))
            print(f"{kind:<9} {file_format:<10} {len(got):>5} {size:>5} {error:>10.2e} {done.path.stat().st_size:>10}",
                  flush=True)


if __name__ == "__main__":
    main()
