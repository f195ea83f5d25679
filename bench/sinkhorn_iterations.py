"""Sinkhorn iterations and marginal errors on real training batches: Emo-DB's MFCC and log-mel statistics.

PARROT is trained on the two classical embeddings of Emo-DB (mfcc-stats 160, logmel-stats 128; 5 folds,
``--epochs`` epochs, the trainer's defaults), then on each member's training batches (its trained params
and its initial params) ott-jax's Sinkhorn is run to the default threshold: iterations taken, the final
marginal error, and the error after fixed iteration counts (bench/accelerator.py's report).

    python bench/sinkhorn_iterations.py [--root ../shared/data/emodb] [--epochs 10]

Random features of the paper's sizes converge in two iterations (their distances concentrate, so the
cost matrix is nearly constant), which says nothing about real batches: hence real audio here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accelerator import sinkhorn_report  # noqa: E402

from parrot_jax.audio import load_audio  # noqa: E402
from parrot_jax.corpora import load_manifest  # noqa: E402
from parrot_jax.encoders import classical  # noqa: E402
from parrot_jax.models import ModelConfig  # noqa: E402
from parrot_jax.splits import make_folds  # noqa: E402
from parrot_jax.training import TrainConfig, train_cell  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb"))
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    manifest = load_manifest("emodb", Path(args.root))
    waves = [load_audio(Path(args.root) / u.path) for u in manifest]
    features = [classical.build(name).embed_batch(waves).astype(np.float32) for name in ("mfcc-stats", "logmel-stats")]
    names = sorted({u.label for u in manifest})
    labels = np.array([names.index(u.label) for u in manifest])
    folds = make_folds(labels, k=5, seed=0)
    cfg = ModelConfig(num_classes=len(names))
    print(f"Emo-DB: {len(labels)} utterances, features {[x.shape for x in features]}, {len(names)} classes", flush=True)
    trained = train_cell("parrot", cfg, features, labels, folds, TrainConfig(epochs=args.epochs))
    print(f"trained {args.epochs} epochs: accuracy {trained.summary()['accuracy']['mean']:.3f}", flush=True)
    sinkhorn_report(features, labels, folds, cfg, trained, {"dims": tuple(x.shape[1] for x in features)}, {})


if __name__ == "__main__":
    main()
