"""The SVM baseline: equals a hand-made SVC per fold, learns a learnable problem, never sees test rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from parrot_jax.splits import make_folds
from parrot_jax.svm import svm_cell


def _problem(n: int = 210, classes: int = 3, dims: tuple[int, ...] = (12, 8), seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % classes)
    centers = [rng.normal(size=(classes, d)) * 1.5 for d in dims]
    feats = [(c[labels] + rng.normal(size=(n, d))).astype(np.float32) * 10 + 3 for c, d in zip(centers, dims)]
    return feats, labels


@pytest.mark.parametrize("refit", [True, False])
def test_equals_plain_sklearn_per_fold(refit):
    """Fitted on the rows the neural models fit on: train + val with refit, train alone without."""
    feats, labels = _problem()
    folds = make_folds(labels, k=5, seed=1)
    cell = svm_cell(feats, labels, folds, refit=refit)
    x = np.concatenate(feats, axis=1)
    for run, fold in zip(cell.runs, folds):
        fit = np.concatenate([fold.train, fold.val]) if refit else fold.train
        assert len(fold.val) > 0
        scaler = StandardScaler().fit(x[fit])
        expected = SVC().fit(scaler.transform(x[fit]), labels[fit]).predict(scaler.transform(x[fold.test]))
        assert np.array_equal(run.predictions, expected)
        assert np.array_equal(run.test_indices, fold.test)
        assert run.accuracy == pytest.approx(np.mean(expected == labels[fold.test]))
    json.dumps(cell.to_json())


def test_well_above_chance_single_and_pair():
    feats, labels = _problem(seed=2)
    folds = make_folds(labels, k=5, seed=0)
    for f in (feats[0], feats):
        summary = svm_cell(f, labels, folds).summary()
        assert summary["accuracy"]["mean"] > 0.8, summary  # chance is 1/3
        assert summary["macro_f1"]["mean"] > 0.8, summary


@pytest.mark.parametrize("protocol", ["stratified", "speaker"])
def test_test_rows_never_reach_the_fit(protocol):
    """With a fold's test rows rewritten (features and labels), its predictions are those of a model
    (scaler + SVC) fitted on the clean training part alone."""
    feats, labels = _problem(seed=3)
    speakers = np.arange(len(labels)) % 10
    folds = make_folds(labels, speakers, protocol=protocol, k=5, seed=0)
    x = np.concatenate(feats, 1)
    rng = np.random.default_rng(9)
    for f, fold in enumerate(folds):
        poisoned = [a.copy() for a in feats]
        for a in poisoned:
            a[fold.test] = rng.normal(size=(len(fold.test), a.shape[1])) * 1e3
        wrong = labels.copy()
        wrong[fold.test] = (wrong[fold.test] + 1) % 3
        run = svm_cell(poisoned, wrong, folds, refit=True).runs[f]  # fits train + val, as the reference below
        fit = np.concatenate([fold.train, fold.val])
        scaler = StandardScaler().fit(x[fit])
        expected = SVC().fit(scaler.transform(x[fit]), labels[fit]).predict(
            scaler.transform(np.concatenate(poisoned, 1)[fold.test])
        )
        assert np.array_equal(run.predictions, expected)


def test_bad_input():
    feats, labels = _problem()
    folds = make_folds(labels, k=5)
    bad = feats[0].copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"features\[0\]: contains NaN"):
        svm_cell(bad, labels, folds)
    with pytest.raises(ValueError, match=r"features\[1\]: expected shape \[210, D\]"):
        svm_cell([feats[0], feats[1][:5]], labels, folds)
    with pytest.raises(ValueError, match="labels: expected non-negative integer"):
        svm_cell(feats, labels.astype(float), folds)
