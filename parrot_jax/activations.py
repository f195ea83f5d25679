"""Penultimate activations of trained models, for the t-SNE maps of the report (the paper's Figure 2).

The activations of a row are the input of the model's last Dense layer in evaluation mode
(`models.penultimate_features`), computed in the trainer's padded fixed-size evaluation batches.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from parrot_jax.models import ModelConfig
from parrot_jax.splits import Fold
from parrot_jax.training import CellResult, Standardizer, predict_logits

PyTree = Any


def penultimate(kind: str, model_config: ModelConfig, params: PyTree, features: Sequence[np.ndarray],
                standardizer: Standardizer | None, eval_batch_size: int = 32) -> np.ndarray:
    """float32 [N, H]: the input of the model's last Dense, rows evaluated in the given order
    `eval_batch_size` at a time (padded, masked), as the trainer does."""
    return predict_logits(kind, model_config, params, features, standardizer, eval_batch_size, output="penultimate")


def test_activations(result: CellResult, model_config: ModelConfig, features: Sequence[np.ndarray],
                     folds: Sequence[Fold], eval_batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(rows, [len(rows), H] penultimate activations): the rows some fold tests (every row under k-fold
    cross-validation; split files may test fewer), sorted, each row's activation taken from the first
    seed's model of the fold that tests it. A row tested by two folds is refused."""
    tested = np.concatenate([fold.test for fold in folds])
    if len(np.unique(tested)) != len(tested):
        raise ValueError("folds test some rows more than once: no single fold model per row for its activations")
    rows = np.sort(tested)
    seed = result.seeds[0]
    out = None
    for f, fold in enumerate(folds):
        params, stats = result.member(seed, f)
        fold_rows = np.sort(fold.test)
        acts = penultimate(result.kind, model_config, params, [x[fold_rows] for x in features], stats, eval_batch_size)
        if out is None:
            out = np.empty((len(rows), acts.shape[1]), np.float32)
        out[np.searchsorted(rows, fold_rows)] = acts
    return rows, out
