"""Folds partition the rows, never leak test rows (or test speakers) into train/val, and refuse bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from parrot_jax.splits import make_folds

EMODB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emodb" / "wav"


def _synthetic(n: int = 300, classes: int = 6, speakers: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, classes, n), rng.integers(0, speakers, n)


def _check_partition(folds, n: int, k: int) -> None:
    assert len(folds) == k
    tests = np.concatenate([f.test for f in folds])
    assert np.array_equal(np.sort(tests), np.arange(n)), "each row must be in exactly one test fold"
    for f in folds:
        for part in (f.train, f.val, f.test):
            assert np.array_equal(part, np.sort(part))
        assert not set(f.test) & set(f.train), "test rows in train"
        assert not set(f.test) & set(f.val), "test rows in val"
        assert not set(f.train) & set(f.val), "val rows in train"
        assert len(f.train) + len(f.val) + len(f.test) == n


@pytest.mark.parametrize("seed", [0, 1])
def test_stratified_partition_and_class_shares(seed):
    labels, _ = _synthetic(seed=seed)
    folds = make_folds(labels, protocol="stratified", k=5, seed=seed, val_fraction=0.1)
    _check_partition(folds, len(labels), 5)
    for f in folds:
        # each class's count in a test fold is within one of its total / k (StratifiedKFold's promise)
        for c in np.unique(labels):
            assert abs(np.sum(labels[f.test] == c) - np.sum(labels == c) / 5) <= 1
        assert abs(len(f.val) - 0.1 * (len(f.train) + len(f.val))) <= 1


@pytest.mark.parametrize("seed", [0, 3])
def test_speaker_protocol_keeps_speakers_apart(seed):
    labels, speakers = _synthetic(seed=seed)
    folds = make_folds(labels, speakers, protocol="speaker", k=5, seed=seed, val_fraction=0.1)
    _check_partition(folds, len(labels), 5)
    for f in folds:
        test_spk, val_spk, train_spk = (set(speakers[p]) for p in (f.test, f.val, f.train))
        assert not test_spk & (train_spk | val_spk), "a test speaker appears in train/val"
        assert not val_spk & train_spk, "a validation speaker appears in train"
        assert len(val_spk) == 1  # round(0.1 * 9 or 10 training speakers) = 1


@pytest.mark.skipif(not EMODB.is_dir(), reason=f"Emo-DB not present at {EMODB} (../shared/data beside the repo)")
def test_speaker_folds_on_real_emodb_names():
    names = sorted(p.name for p in EMODB.glob("*.wav"))
    assert len(names) == 535
    speakers = np.array([n[:2] for n in names])
    labels = np.array([n[5] for n in names])
    folds = make_folds(labels, speakers, protocol="speaker", k=5, seed=0)
    _check_partition(folds, 535, 5)
    for f in folds:
        assert len(set(speakers[f.test])) == 2  # 10 actors over 5 folds
        assert not set(speakers[f.test]) & set(speakers[np.concatenate([f.train, f.val])])


def test_deterministic_and_seed_dependent():
    labels, speakers = _synthetic()
    a = make_folds(labels, protocol="stratified", seed=7)
    b = make_folds(labels, protocol="stratified", seed=7)
    c = make_folds(labels, protocol="stratified", seed=8)
    assert all(np.array_equal(x.test, y.test) and np.array_equal(x.val, y.val) for x, y in zip(a, b))
    assert not all(np.array_equal(x.test, y.test) for x, y in zip(a, c))


def test_zero_val_fraction_gives_empty_val():
    labels, speakers = _synthetic()
    for protocol in ("stratified", "speaker"):
        for f in make_folds(labels, speakers, protocol=protocol, val_fraction=0.0):
            assert len(f.val) == 0


def test_errors_name_the_values():
    labels, speakers = _synthetic()
    tiny = np.array([0] * 10 + [1] * 3)
    with pytest.raises(ValueError, match=re.escape("these have fewer: {'1': 3}")):
        make_folds(tiny, protocol="stratified", k=5)
    with pytest.raises(ValueError, match=r"needs at least 5 speakers, got 3: \[0, 1, 2\]; use at most 3 folds "
                       r"\(--folds 3\) or the stratified protocol \(--protocol stratified\)"):  # fmt: skip
        make_folds(labels, speakers % 3, protocol="speaker", k=5)
    with pytest.raises(ValueError, match=r"training part with one speaker \(\[[01]\]\); train without validation "
                       r"\(--set val_fraction=0\)"):  # fmt: skip
        make_folds(labels, speakers % 2, protocol="speaker", k=2)
    assert len(make_folds(labels, speakers % 2, protocol="speaker", k=2, val_fraction=0.0)) == 2
    with pytest.raises(ValueError, match="needs the speakers array"):
        make_folds(labels, protocol="speaker")
    with pytest.raises(ValueError, match="protocol: expected one of"):
        make_folds(labels, protocol="random")
    with pytest.raises(ValueError, match=r"speakers: expected shape \(300,\)"):
        make_folds(labels, speakers[:10], protocol="speaker")
    with pytest.raises(ValueError, match=r"val_fraction: expected a value in \[0, 1\), got 1.5"):
        make_folds(labels, val_fraction=1.5)
