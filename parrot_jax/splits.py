"""k-fold splits of a corpus: the paper's stratified folds and speaker-independent folds.

Each fold holds three disjoint, sorted sets of row indices: ``test`` (one of the k folds), and the
remaining k-1 folds divided into ``train`` and ``val`` (the validation part used for early stopping).
Nothing in ``test`` ever appears in ``train`` or ``val``; under ``protocol="speaker"`` no speaker of
``test`` appears in ``train`` or ``val`` either, and ``val`` is carved by speaker as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

Protocol = Literal["stratified", "speaker"]
PROTOCOLS: tuple[str, ...] = ("stratified", "speaker")

#: Share of each fold's training rows (or speakers) held out for early stopping. The paper uses
#: early stopping without saying on what; 10 % of the training part is our default.
DEFAULT_VAL_FRACTION = 0.1


@dataclass(frozen=True)
class Fold:
    """Row indices of one cross-validation fold (each sorted, pairwise disjoint)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def make_folds(
    labels: np.ndarray,
    speakers: np.ndarray | None = None,
    protocol: Protocol = "stratified",
    k: int = 5,
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> list[Fold]:
    """Split rows into k folds; every row is in exactly one fold's ``test``.

    - ``stratified`` (the paper): random folds with each class's share kept (scikit-learn
      ``StratifiedKFold(shuffle=True, random_state=seed)``); ``val`` is a stratified random
      ``val_fraction`` of the training part.
    - ``speaker`` (speaker-independent): whole speakers per fold, class shares balanced as far as
      whole speakers allow (``StratifiedGroupKFold``); ``val`` is ``round(val_fraction * S)`` (at
      least one) of the S training speakers, drawn at random.

    ``val_fraction=0`` gives empty validation parts (no early stopping).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels: expected a non-empty 1-D array, got shape {labels.shape}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k: expected an integer >= 2, got {k!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a value in [0, 1), got {val_fraction!r}")
    rows = np.arange(len(labels))
    if protocol == "stratified":
        classes, counts = np.unique(labels, return_counts=True)
        if counts.min() < k:
            small = {str(c): int(n) for c, n in zip(classes, counts) if n < k}
            raise ValueError(f"stratified {k}-fold split: every class needs at least {k} rows; these have fewer: {small}")
        outer = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(rows, labels)
        return [_fold(rest, test, _stratified_val(rest, labels, val_fraction, seed)) for rest, test in outer]

    if speakers is None:
        raise ValueError("protocol 'speaker' needs the speakers array (one speaker id per row)")
    speakers = np.asarray(speakers)
    if speakers.shape != labels.shape:
        raise ValueError(f"speakers: expected shape {labels.shape} (one per label), got {speakers.shape}")
    distinct = np.unique(speakers)
    if len(distinct) < k:
        raise ValueError(f"speaker {k}-fold split needs at least {k} speakers, got {len(distinct)}: "
                         f"{distinct.tolist()}; use at most {len(distinct)} folds (--folds {len(distinct)}) or "
                         "the stratified protocol (--protocol stratified)")
    outer = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(rows, labels, speakers)
    rng = np.random.default_rng(seed)
    folds = []
    for rest, test in outer:
        folds.append(_fold(rest, test, _speaker_val(rest, speakers, val_fraction, rng)))
    return folds


def _stratified_val(rest: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """A stratified random ``val_fraction`` of ``rest`` (plain random where a class is too small)."""
    if val_fraction == 0.0:
        return np.empty(0, dtype=np.int64)
    _, counts = np.unique(labels[rest], return_counts=True)
    stratify = labels[rest] if counts.min() >= 2 else None
    _, val = train_test_split(rest, test_size=val_fraction, random_state=seed, stratify=stratify)
    return val


def _speaker_val(rest: np.ndarray, speakers: np.ndarray, val_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """All rows of ``round(val_fraction * S)`` (at least one, at most S - 1) random training speakers."""
    if val_fraction == 0.0:
        return np.empty(0, dtype=np.int64)
    pool = np.unique(speakers[rest])
    if len(pool) < 2:
        raise ValueError(f"cannot carve a validation speaker from a training part with one speaker ({pool.tolist()}); "
                         "train without validation (--set val_fraction=0), or with more speakers per training part "
                         "(more folds)")
    n_val = min(max(1, round(val_fraction * len(pool))), len(pool) - 1)
    chosen = rng.choice(pool, size=n_val, replace=False)
    return rest[np.isin(speakers[rest], chosen)]


def _fold(rest: np.ndarray, test: np.ndarray, val: np.ndarray) -> Fold:
    val = np.sort(val).astype(np.int64)
    train = np.setdiff1d(rest, val).astype(np.int64)
    return Fold(train=train, val=val, test=np.sort(test).astype(np.int64))
