"""The SVM baseline of Table 1: scikit-learn's SVC with its default hyperparameters, on the same folds.

SVC() defaults: RBF kernel k(x, x') = exp(-gamma ||x - x'||^2), gamma = 1 / (D Var(X)) ("scale"),
C = 1, one-vs-one multi-class. The SVM has no early stopping; it fits on the rows the neural models of
the same grid fit their final parameters on (`splits.Fold.fit_rows`): ``train`` + ``val`` when they
refit on both (``refit``), ``train`` alone when ``val`` is held out of their training. It is evaluated
on ``test``. Two feature arrays (a model pair) are concatenated column-wise.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
from sklearn.svm import SVC

from parrot_jax.splits import Fold
from parrot_jax.training import CellResult, _run_result, fit_standardizer


def svm_cell(
    features: Sequence[np.ndarray] | np.ndarray,
    labels: np.ndarray,
    folds: Sequence[Fold],
    standardize: bool = True,
    refit: bool = False,
) -> CellResult:
    """Fit and test one SVC per fold, on ``fold.fit_rows(refit)``. ``standardize`` (default True): z-score
    each column with the mean/std of those rows only. Probabilities are one-hot predictions (SVC's default
    has no probability model); ``best_epoch`` / ``epochs_run`` are None."""
    start = time.perf_counter()
    arrays = [features] if isinstance(features, np.ndarray) else list(features)
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"labels: expected non-negative integer class ids [N], got {labels.dtype} {labels.shape}")
    for i, x in enumerate(arrays):
        if x.ndim != 2 or len(x) != len(labels):
            raise ValueError(f"features[{i}]: expected shape [{len(labels)}, D], got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"features[{i}]: contains NaN or infinite values")
    x = np.concatenate([np.asarray(a, np.float32) for a in arrays], axis=1)
    num_classes = int(labels.max()) + 1
    runs = []
    for f, fold in enumerate(folds):
        fit_rows = fold.fit_rows(refit)
        if np.intersect1d(fit_rows, fold.test).size:
            raise ValueError(f"fold {f}: test rows overlap the training part")
        z = fit_standardizer([x], fit_rows).apply([x])[0] if standardize else x
        pred = SVC().fit(z[fit_rows], labels[fit_rows]).predict(z[fold.test])
        probs = np.eye(num_classes, dtype=np.float32)[pred]
        runs.append(_run_result(0, f, labels[fold.test], probs, fold.test, num_classes, None, None))
    return CellResult(
        kind="svm",
        num_classes=num_classes,
        seeds=(0,),
        runs=runs,
        config={"svm": {"estimator": "sklearn.svm.SVC()", "standardize": standardize, "refit": refit}},
        seconds=time.perf_counter() - start,
    )
