"""The vmapped k-fold trainer: equal to each fold trained alone, padding-exact, leak-free, and it learns.

Tiny dimensions throughout (filters (4, 8), latent 8, hidden 16, inputs of 16 and 12 columns) and a
fixed 20-iteration Sinkhorn differentiated by unrolling, so that compiling stays cheap on a 2-core CPU
(the trainer is agnostic to the Sinkhorn options; tests/test_ot.py covers them). Most tests use 150 rows
and three members so that they share compiled programs.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from parrot_jax.models import MODEL_KINDS, ModelConfig, build_model, num_inputs
from parrot_jax.ot import SinkhornOptions
from parrot_jax.splits import Fold, make_folds
from parrot_jax.training import (
    NonFiniteLoss,
    TrainConfig,
    _bucket,
    _programs,
    epoch_order,
    fit_standardizer,
    predict_logits,
    train_cell,
    train_cells,
)

DIMS = (16, 12)
CLASSES = 3


def _config(dropout: float | None = None) -> ModelConfig:
    sinkhorn = SinkhornOptions(max_iterations=20, threshold=None, gradient="unroll")
    cfg = ModelConfig(num_classes=CLASSES, filters=(4, 8), latent_dim=8, hidden=16, sinkhorn=sinkhorn)
    return cfg if dropout is None else dataclasses.replace(cfg, dropout_rate=dropout)


def _problem(n: int = 150, seed: int = 0, separation: float = 1.5):
    """Gaussian classes: each class has its own mean vector in each input, plus an offset and scale."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % CLASSES)
    feats = []
    for d in DIMS:
        centers = rng.normal(size=(CLASSES, d)) * separation
        feats.append(((centers[labels] + rng.normal(size=(n, d))) * 3.0 + 5.0).astype(np.float32))
    return feats, labels


def _inputs(kind, feats):
    return feats[: num_inputs(kind)]


def _unequal_folds(n: int) -> list[Fold]:
    """Three hand-made folds of different train / val / test sizes (train 70, 53, 41 rows)."""
    rows = np.random.default_rng(5).permutation(n)
    sizes = [(70, 20, 30), (53, 12, 40), (41, 9, 25)]
    folds = []
    for tr, va, te in sizes:
        folds.append(Fold(np.sort(rows[:tr]), np.sort(rows[tr : tr + va]), np.sort(rows[tr + va : tr + va + te])))
        rows = np.roll(rows, 37)
    return folds


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.slow
def test_vmapped_equals_each_fold_alone():
    """Every (seed, fold) of one vmapped program equals that member trained alone (fold_axis="loop"):
    params within 2e-5 absolute, identical predictions, best epochs and epochs run. Folds of unequal
    sizes, two seeds, dropout on, early stopping active."""
    feats, labels = _problem()
    folds = _unequal_folds(len(labels))
    config = TrainConfig(epochs=6, patience=2, monitor="loss", seeds=(0, 1), loop="step")
    together = train_cell("parrot", _config(), feats, labels, folds, config)
    alone = train_cell("parrot", _config(), feats, labels, folds, dataclasses.replace(config, fold_axis="loop"))
    assert _max_diff(together.params, alone.params) < 2e-5
    for a, b in zip(together.runs, alone.runs):
        assert (a.seed, a.fold, a.best_epoch, a.epochs_run) == (b.seed, b.fold, b.best_epoch, b.epochs_run)
        assert np.array_equal(a.predictions, b.predictions)
        assert np.allclose(a.probabilities, b.probabilities, atol=1e-5)
        assert a.accuracy == b.accuracy and a.macro_f1 == b.macro_f1 and np.array_equal(a.confusion, b.confusion)
    # the members really differ (no accidental sharing of state between folds or seeds)
    p = together.params
    assert _max_diff(jax.tree_util.tree_map(lambda a: a[0], p), jax.tree_util.tree_map(lambda a: a[1], p)) > 1e-3
    assert _max_diff(jax.tree_util.tree_map(lambda a: a[0], p), jax.tree_util.tree_map(lambda a: a[3], p)) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["parrot", "cnn"])
def test_whole_cell_on_device_equals_host_loop(kind):
    """loop="cell" (epochs, validation, patience and best params inside one device program, read every 3
    epochs) equals the host loop of jitted steps (loop="step"): identical predictions, best epochs and
    epochs run, params within 2e-5, the same per-epoch progress; early stopping fires at different epochs
    for different members (checked, so that the comparison covers it)."""
    feats, labels = _problem()
    folds = _unequal_folds(len(labels))
    config = TrainConfig(epochs=8, patience=1, monitor="accuracy", learning_rate=1e-2, seeds=(0, 1), loop="step")
    seen = {"step": [], "cell": []}
    host = train_cell(kind, _config(), _inputs(kind, feats), labels, folds, config,
                      progress=lambda e, m: seen["step"].append((e, m)))
    device = train_cell(kind, _config(), _inputs(kind, feats), labels, folds,
                        dataclasses.replace(config, loop="cell", progress_every=3),
                        progress=lambda e, m: seen["cell"].append((e, m)))
    assert len({r.epochs_run for r in host.runs}) >= 2 and min(r.epochs_run for r in host.runs) < config.epochs
    assert _max_diff(host.params, device.params) < 2e-5
    for a, b in zip(host.runs, device.runs):
        assert (a.seed, a.fold, a.best_epoch, a.epochs_run) == (b.seed, b.fold, b.best_epoch, b.epochs_run)
        assert np.array_equal(a.predictions, b.predictions)
        assert np.allclose(a.probabilities, b.probabilities, atol=1e-5)
    assert [e for e, _ in seen["step"]] == [e for e, _ in seen["cell"]]
    for (_, a), (_, b) in zip(seen["step"], seen["cell"]):
        assert np.array_equal(a["active"], b["active"])
        assert np.allclose(a["val_accuracy"], b["val_accuracy"], rtol=0, atol=1e-6)  # float32 on the device
        for name in ("train_loss", "val_loss"):
            assert np.allclose(a[name], b[name], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_uar_monitor_and_refit_on_device_equal_host_loop():
    """The device program's UA monitor and per-member epoch limits (the refit pass) give what the host loop
    gives: identical best epochs, epochs run and predictions."""
    feats, labels = _problem()
    folds = _unequal_folds(len(labels))
    config = TrainConfig(epochs=8, patience=1, monitor="uar", refit=True, learning_rate=1e-2, seeds=(0, 1),
                         loop="step")
    host = train_cell("fcn", _config(), feats[:1], labels, folds, config)
    device = train_cell("fcn", _config(), feats[:1], labels, folds, dataclasses.replace(config, loop="cell"))
    assert len({r.best_epoch for r in host.runs}) >= 2
    for a, b in zip(host.runs, device.runs):
        assert (a.seed, a.fold, a.best_epoch, a.epochs_run) == (b.seed, b.fold, b.best_epoch, b.epochs_run)
        assert np.array_equal(a.predictions, b.predictions)


@pytest.mark.slow
def test_bucketed_shapes_equal_unbucketed():
    """loop="cell" pads epochs, steps and validation batches to `_bucket` sizes (here 5 epochs -> 6,
    5 steps of 16 rows -> 6, 5 validation batches of 4 rows -> 6); trained with early stopping on the
    validation loss it equals loop="step", whose shapes are the real ones: identical predictions, best
    epochs and epochs run, params within 2e-5, the same progress for the 5 real epochs only."""
    feats, labels = _problem()
    folds = _unequal_folds(len(labels))  # train 70, 53, 41 rows: 5, 4, 3 steps; val 20, 12, 9 rows: 5, 3, 3 batches
    config = TrainConfig(epochs=5, batch_size=16, eval_batch_size=4, patience=1, monitor="loss",
                         learning_rate=3e-2, seeds=(0, 1), loop="step")
    assert (_bucket(5), _bucket(4), _bucket(3)) == (6, 4, 3)
    seen = {"step": [], "cell": []}
    host = train_cell("parrot", _config(), feats, labels, folds, config,
                      progress=lambda e, m: seen["step"].append((e, m)))
    padded = train_cell("parrot", _config(), feats, labels, folds,
                        dataclasses.replace(config, loop="cell", progress_every=2),
                        progress=lambda e, m: seen["cell"].append((e, m)))
    assert len({(r.best_epoch, r.epochs_run) for r in host.runs}) >= 2  # early stopping picks, members differ
    assert max(r.epochs_run for r in host.runs) == config.epochs
    assert _max_diff(host.params, padded.params) < 2e-5
    for a, b in zip(host.runs, padded.runs):
        assert (a.seed, a.fold, a.best_epoch, a.epochs_run) == (b.seed, b.fold, b.best_epoch, b.epochs_run)
        assert np.array_equal(a.predictions, b.predictions)
        assert np.allclose(a.probabilities, b.probabilities, atol=1e-5)
    assert [e for e, _ in seen["cell"]] == [e for e, _ in seen["step"]] == list(range(1, config.epochs + 1))
    for (_, a), (_, b) in zip(seen["step"], seen["cell"]):
        assert np.array_equal(a["active"], b["active"])
        for name in ("train_loss", "val_loss", "val_accuracy"):
            assert np.allclose(a[name], b[name], rtol=1e-5, atol=1e-5)


def test_bucket_sizes():
    assert [_bucket(n) for n in range(1, 18)] == [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16, 16, 16, 16, 24]
    assert (_bucket(50), _bucket(64), _bucket(65), _bucket(100)) == (64, 64, 96, 128)


@pytest.mark.slow
def test_epochs_and_fold_sizes_in_one_bucket_compile_the_cell_once():
    """Two trainings with loop="cell" whose epoch counts (5, 6), steps per epoch (5, 6) and validation
    batches (5, 6) differ but share buckets compile the whole-cell program once (it compiled once per
    shape before bucketing)."""
    feats, labels = _problem()
    rows = np.random.default_rng(3).permutation(len(labels))
    wider = [Fold(np.sort(r[:90]), np.sort(r[90:114]), np.sort(r[114:144]))
             for r in (rows, rows[::-1], np.roll(rows, 50))]  # train 90 rows: 6 steps; val 24 rows: 6 batches
    config = TrainConfig(epochs=5, batch_size=16, eval_batch_size=4, patience=2, monitor="loss", learning_rate=2e-3,
                         loop="cell")
    programs = _programs("fcn", _config(), config.learning_rate, "cell")
    before = programs.cell._cache_size()
    train_cell("fcn", _config(), feats[:1], labels, _unequal_folds(len(labels)), config)  # 5 steps, 5 val batches
    assert programs.cell._cache_size() == before + 1
    train_cell("fcn", _config(), feats[:1], labels, wider, dataclasses.replace(config, epochs=6))  # 6 and 6
    assert programs.cell._cache_size() == before + 1


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["step", "cell"])
def test_packed_cells_equal_each_cell_alone(loop):
    """Two cells of equal shapes (other features, the same labels and folds) trained as one program
    (12 members: cell x seed x fold) equal each cell trained alone: identical predictions, best epochs
    and epochs run, params within 2e-5; each member standardised with its own cell's training rows."""
    feats, labels = _problem()
    rng = np.random.default_rng(7)
    other = [(x[:, ::-1] * 0.5 + rng.normal(size=x.shape) - 2.0).astype(np.float32) for x in feats]
    folds = _unequal_folds(len(labels))
    config = TrainConfig(epochs=6, patience=2, monitor="loss", seeds=(0, 1), loop=loop)  # as test_vmapped_...
    packed = train_cells("parrot", _config(), [feats, other], labels, folds, config)
    assert len(packed) == 2
    for cell_feats, together in zip([feats, other], packed):
        alone = train_cell("parrot", _config(), cell_feats, labels, folds, config)
        assert _max_diff(together.params, alone.params) < 2e-5
        for a, b in zip(together.runs, alone.runs):
            assert (a.seed, a.fold, a.best_epoch, a.epochs_run) == (b.seed, b.fold, b.best_epoch, b.epochs_run)
            assert np.array_equal(a.predictions, b.predictions) and np.array_equal(a.test_indices, b.test_indices)
            assert np.allclose(a.probabilities, b.probabilities, atol=1e-5)
        _, stats = together.member(1, 2)
        assert np.allclose(stats.mean[0], cell_feats[0][folds[2].train].mean(0), rtol=1e-5, atol=1e-5)
    # the cells really trained on their own features
    assert _max_diff(packed[0].params, packed[1].params) > 1e-3


def test_packed_cells_must_match():
    feats, labels = _problem(n=60)
    folds = make_folds(labels, k=3)
    with pytest.raises(ValueError, match=r"every packed cell needs the same feature shapes; got \[\(\(60, 16\),\), \(\(60, 12\),\)\]"):
        train_cells("fcn", _config(), [feats[:1], feats[1:]], labels, folds, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match=r"cell 1: features\[0\]: expected shape \[60, D\] \(or \[60, L\+1, D\], every layer\), got \(59, 16\)"):
        train_cells("fcn", _config(), [feats[:1], [feats[0][1:]]], labels, folds, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="cells: expected at least one"):
        train_cells("fcn", _config(), [], labels, folds, TrainConfig(epochs=1))


@pytest.mark.slow
@pytest.mark.parametrize("kind, loop", [("parrot", "step"), ("fcn", "scan"), ("cnn", "cell")])
def test_padded_batches_equal_exact_batches(kind, loop):
    """A fold trained inside the padded, masked program (next to a fold with more steps) equals a plain
    optax loop over exactly its own batches (the last one partial, no padding): params within 2e-5."""
    feats, labels = _problem()
    folds = _unequal_folds(len(labels))
    folds = [Fold(f.train, np.empty(0, np.int64), f.test) for f in folds]  # no validation: keep last params
    config = TrainConfig(epochs=3, patience=None, loop=loop)
    model_config = _config(dropout=0.0)
    cell = train_cell(kind, model_config, _inputs(kind, feats), labels, folds, config)

    fold_id = 2  # the smallest fold: 41 rows = 32 + 9, two steps where fold 0 takes three
    module = build_model(kind, model_config)
    fold = folds[fold_id]
    stats = fit_standardizer(_inputs(kind, feats), fold.train)
    xs = stats.apply(_inputs(kind, feats))
    key = jax.random.fold_in(jax.random.PRNGKey(0), fold_id)
    k_params, k_dropout = jax.random.split(jax.random.fold_in(key, 0))
    dummy = tuple(jnp.zeros((2, d), jnp.float32) for d in DIMS[: num_inputs(kind)])
    params = module.init({"params": k_params, "dropout": k_dropout}, dummy, mask=None, train=False)["params"]
    tx = optax.adam(config.learning_rate)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, x, y):
        def loss_fn(p):
            logits = module.apply({"params": p}, x, train=False)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    for epoch in range(config.epochs):
        order = epoch_order(0, fold_id, epoch, fold.train)
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            params, opt = step(params, opt, tuple(x[rows] for x in xs), labels[rows])
    trained, _ = cell.member(0, fold_id)
    assert _max_diff(trained, params) < 2e-5


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["stratified", "speaker"])
def test_test_rows_never_reach_training(protocol):
    """Rewriting fold f's test rows (features and labels) leaves fold f's trained params, best epoch
    and standardisation exactly unchanged; the standardiser is the training rows' mean and std."""
    feats, labels = _problem()
    speakers = np.arange(len(labels)) % 8
    folds = make_folds(labels, speakers, protocol=protocol, k=3, seed=0)
    config = TrainConfig(epochs=3, patience=2, monitor="loss", loop="step")
    base = train_cell("parrot", _config(), feats, labels, folds, config)
    f = 1
    test = folds[f].test
    poisoned = [x.copy() for x in feats]
    for x in poisoned:
        x[test] = 1e4
    wrong = labels.copy()
    wrong[test] = (wrong[test] + 1) % CLASSES
    other = train_cell("parrot", _config(), poisoned, wrong, folds, config)
    p_base, s_base = base.member(0, f)
    p_other, s_other = other.member(0, f)
    assert _max_diff(p_base, p_other) == 0.0
    assert base.runs[f].best_epoch == other.runs[f].best_epoch
    for i, x in enumerate(feats):
        assert np.array_equal(s_base.mean[i], s_other.mean[i])
        assert np.allclose(s_base.mean[i], x[folds[f].train].mean(0), rtol=1e-5, atol=1e-5)
        assert np.allclose(s_base.scale[i], x[folds[f].train].std(0), rtol=1e-5)
    # other folds do see the rewritten rows (they train on them): the test above is not vacuous
    assert _max_diff(base.member(0, 0)[0], other.member(0, 0)[0]) > 0


@pytest.mark.slow
def test_every_kind_learns():
    """On separable Gaussian classes every model kind reaches accuracy and macro-F1 > 0.65 (chance 1/3)."""
    feats, labels = _problem(seed=1, separation=1.5)
    folds = make_folds(labels, k=3, seed=0)
    config = TrainConfig(epochs=25, patience=None, learning_rate=3e-3)
    for kind in MODEL_KINDS:
        cell = train_cell(kind, _config(), _inputs(kind, feats), labels, folds, config)
        summary = cell.summary()
        assert summary["accuracy"]["mean"] > 0.65, (kind, summary)
        assert summary["macro_f1"]["mean"] > 0.65, (kind, summary)


def test_results_predict_progress_and_json():
    feats, labels = _problem(n=90)
    folds = make_folds(labels, k=3, seed=0)
    seen = []
    config = TrainConfig(epochs=2, patience=None, seeds=(3, 4), fold_axis="vmap")
    cell = train_cell("fcn", _config(), feats[:1], labels, folds, config, progress=lambda e, m: seen.append((e, m)))
    assert [(e, m["pass"], m["passes"]) for e, m in seen] == [(1, 0, 1), (2, 0, 1)]
    assert seen[0][1]["train_loss"].shape == (6,) and np.all(np.isfinite(seen[0][1]["val_loss"]))
    # one member after another: each pass reports its member's epochs alone
    seen.clear()
    train_cell("fcn", _config(), feats[:1], labels, folds, dataclasses.replace(config, fold_axis="loop"),
               progress=lambda e, m: seen.append((e, m)))
    assert [(e, m["pass"], m["passes"]) for e, m in seen] == [(e, p, 6) for p in range(6) for e in (1, 2)]
    assert {m["train_loss"].shape for _, m in seen} == {(1,)}
    assert [(r.seed, r.fold) for r in cell.runs] == [(s, f) for s in (3, 4) for f in range(3)]
    for run in cell.runs:
        assert np.array_equal(run.test_indices, folds[run.fold].test)
        assert np.allclose(run.probabilities.sum(1), 1.0, atol=1e-5)
        assert run.confusion.sum() == len(run.test_indices)
        assert run.epochs_run == 2 and 1 <= run.best_epoch <= 2
    # new rows through predict_logits: same as the trainer's own test evaluation
    params, stats = cell.member(4, 1)
    logits = predict_logits("fcn", _config(), params, [feats[0][folds[1].test]], stats)
    assert np.allclose(jax.nn.softmax(logits), cell.runs[4].probabilities, atol=1e-5)
    summary = cell.summary()
    accs = np.array([[r.accuracy for r in cell.runs if r.seed == s] for s in (3, 4)])
    assert summary["accuracy"]["mean"] == pytest.approx(accs.mean())
    assert summary["accuracy"]["std_seeds"] == pytest.approx(accs.mean(1).std())
    assert summary["accuracy"]["std_folds"] == pytest.approx(accs.mean(0).std())
    encoded = json.loads(json.dumps(cell.to_json()))
    assert encoded["config"]["train"]["seeds"] == [3, 4] and len(encoded["runs"]) == 6


def test_refit_trains_each_member_on_train_and_val_for_its_best_epoch():
    """refit: each member (seed) equals a member trained without validation on train + val for exactly the
    best epoch early stopping picked for it (the same initialisation, shuffles and standardiser rows)."""
    feats, labels = _problem(n=90)
    fold = _unequal_folds(90)[2]
    config = TrainConfig(epochs=6, patience=2, monitor="uar", learning_rate=1e-2, seeds=(0, 1), loop="step",
                         refit=True)
    refit = train_cell("fcn", _config(), feats[:1], labels, [fold], config)
    whole = Fold(fold.fit_rows(True), np.empty(0, np.int64), fold.test)
    assert len(whole.train) == len(fold.train) + len(fold.val)
    for run in refit.runs:
        alone = train_cell("fcn", _config(), feats[:1], labels, [whole],
                           dataclasses.replace(config, seeds=(run.seed,), epochs=run.best_epoch, refit=False)).runs[0]
        assert alone.epochs_run == run.best_epoch
        assert np.array_equal(alone.predictions, run.predictions)
        assert np.allclose(alone.probabilities, run.probabilities, atol=1e-6)
    kept = train_cell("fcn", _config(), feats[:1], labels, [fold], dataclasses.replace(config, refit=False))
    assert [r.best_epoch for r in kept.runs] == [r.best_epoch for r in refit.runs]


def test_monitor_none_trains_every_epoch_and_keeps_the_last_params():
    feats, labels = _problem(n=60)
    folds = make_folds(labels, k=3)
    config = TrainConfig(epochs=3, patience=1, monitor="none", learning_rate=1e-2, loop="step")
    kept = train_cell("fcn", _config(), feats[:1], labels, folds, config)
    assert [(r.best_epoch, r.epochs_run) for r in kept.runs] == [(3, 3)] * 3
    blind = [Fold(f.train, np.empty(0, np.int64), f.test) for f in folds]  # the same without validation rows
    alone = train_cell("fcn", _config(), feats[:1], labels, blind, config)
    assert all(np.array_equal(a.predictions, b.predictions) for a, b in zip(kept.runs, alone.runs))


@pytest.mark.parametrize("loop", ["step", pytest.param("cell", marks=pytest.mark.slow)])
def test_non_finite_loss_stops_the_cell_naming_seed_fold_and_epoch(loop):
    """An injected non-finite loss: one row of huge features (finite, unstandardised) overflows the logits
    of every member that trains on it; fold 0 tests on that row and folds 1 and 2 train on it, so they fail
    in epoch 1, and seed 0's fold 1 is named first."""
    feats, labels = _problem(n=60)
    folds = make_folds(labels, k=3)
    feats = [feats[0].copy()]
    feats[0][np.intersect1d(folds[0].test, np.intersect1d(folds[1].train, folds[2].train))[0]] = 3e38
    config = TrainConfig(epochs=3, seeds=(0, 1), standardize=False, loop=loop)
    with pytest.raises(NonFiniteLoss, match=r"^seed 0, fold 1 \(0-based\), epoch 1: training loss is nan "
                       r"\(not finite\)$") as caught:
        train_cell("fcn", _config(), feats, labels, folds, config)
    assert (caught.value.cell, caught.value.seed, caught.value.fold, caught.value.epoch) == (0, 0, 1, 1)


@pytest.mark.parametrize("loop", ["step", pytest.param("cell", marks=pytest.mark.slow)])
def test_non_finite_validation_loss_stops_the_cell_too(loop):
    """A validation row of huge features (never trained on: the other fold tests on it) makes only the validation
    loss non-finite; a NaN score never counts as better, so the member would silently keep its initial params."""
    feats, labels = _problem(n=60)
    folds = make_folds(labels, k=2, val_policy="stratified")
    feats = [feats[0].copy()]
    feats[0][folds[0].val[0]] = 3e38  # in fold 1's test part: no member trains on it
    config = TrainConfig(epochs=2, standardize=False, loop=loop, monitor="loss")
    with pytest.raises(NonFiniteLoss, match=r"^seed 0, fold 0 \(0-based\), epoch 1: validation loss is (nan|inf) "
                       r"\(not finite\)$"):
        train_cell("fcn", _config(), feats, labels, folds, config)


def test_bad_input_is_named():
    feats, labels = _problem(n=60)
    folds = make_folds(labels, k=3)
    with pytest.raises(ValueError, match=r"model kind 'parrot' takes 2 feature array\(s\), got 1"):
        train_cell("parrot", _config(), feats[:1], labels, folds, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="kind: expected one of"):
        train_cell("lstm", _config(), feats[:1], labels, folds, TrainConfig(epochs=1))
    bad = feats[0].copy()
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"features\[0\]: contains NaN or infinite values \(rows \[7\]"):
        train_cell("fcn", _config(), [bad], labels, folds, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="class id 3 found, but model_config.num_classes is 3"):
        train_cell("fcn", _config(), feats[:1], np.where(labels == 0, 3, labels), folds, TrainConfig(epochs=1))
    overlapping = [Fold(folds[0].train, folds[0].val, folds[0].train[:3])]
    with pytest.raises(ValueError, match="fold 0: train, val and test overlap"):
        train_cell("fcn", _config(), feats[:1], labels, overlapping, TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="TrainConfig.patience must be None or an int >= 1, got 0"):
        TrainConfig(patience=0)
    with pytest.raises(ValueError, match="TrainConfig.loop must be one of"):
        TrainConfig(loop="while")
    with pytest.raises(ValueError, match="TrainConfig.progress_every must be an int >= 1, got 0"):
        TrainConfig(progress_every=0)


_CACHED_RUN = """
import sys, jax, numpy as np
from jax import monitoring
sys.path.insert(0, sys.argv[2])
from test_training import _config, _problem
from parrot_jax.splits import make_folds
from parrot_jax.compilation_cache import enable_compilation_cache
from parrot_jax.training import TrainConfig, train_cell
counts = {"hits": 0, "misses": 0}
def listen(event, **kwargs):
    for name in counts:
        if event == "/jax/compilation_cache/cache_" + name:
            counts[name] += 1
monitoring.register_event_listener(listen)
enable_compilation_cache(sys.argv[1])
feats, labels = _problem(n=60)
train_cell("fcn", _config(), feats[:1], labels, make_folds(labels, k=3), TrainConfig(epochs=2, loop=sys.argv[3]))
print(counts["hits"], counts["misses"])
"""


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["step", "cell"])
def test_second_process_loads_programs_from_the_persistent_cache(tmp_path, loop):
    """With `enable_compilation_cache`, a first process compiles and stores every program (misses, cache
    files written); a second process training the same shapes finds every one of them (hits, no miss)."""
    def run() -> tuple[int, int]:
        env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-c", _CACHED_RUN, str(tmp_path), str(Path(__file__).parent), loop],
                             capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        hits, misses = map(int, out.stdout.split()[-2:])
        return hits, misses

    first = run()  # a hit here: two calls compiling the same program (e.g. one initialiser from two closures)
    assert first[1] >= 3 and len(list(tmp_path.iterdir())) >= first[1]
    second = run()
    assert second == (first[0] + first[1], 0)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_initial_params_are_bitwise_those_of_a_jitted_init(kind):
    """The trainer's eager ``lazy_init`` under vmap (no forward pass compiled) gives every member exactly the
    params and Adam state a jitted, vmapped ``module.init`` on dummy inputs gives."""
    programs = _programs(kind, _config(), 1e-3, "step")
    keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), f) for s in (0, 7) for f in range(3)])
    shapes = tuple((d,) for d in DIMS[: num_inputs(kind)])

    def reference(key):
        k_params, k_dropout = jax.random.split(jax.random.fold_in(key, 0))
        dummy = tuple(jnp.zeros((2, *shape), jnp.float32) for shape in shapes)
        params = programs.module.init({"params": k_params, "dropout": k_dropout}, dummy, mask=None, train=False)
        return params["params"], programs.tx.init(params["params"])

    ours, theirs = programs.init(keys, shapes), jax.jit(jax.vmap(reference))(keys)
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(theirs)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)):
        assert a.shape == b.shape and np.array_equal(a, b)


def test_fold_axis_auto_resolves_on_cpu_as_the_readme_says(monkeypatch):
    """"auto" on one CPU device: "vmap" for members of at most `CPU_VMAP_MAX_PARAMETERS` parameters, "loop" for
    larger ones; "vmap" where members are spread over several devices. The README's defaults table states the
    same threshold, and a cell records the axis it ran."""
    from parrot_jax import training

    assert jax.default_backend() == "cpu"
    limit = training.CPU_VMAP_MAX_PARAMETERS
    assert TrainConfig().fold_axis == "auto"
    assert TrainConfig().member_axis(1, limit) == "vmap" and TrainConfig().member_axis(1, limit + 1) == "loop"
    assert TrainConfig().member_axis(4, limit + 1) == "vmap"
    assert TrainConfig(fold_axis="vmap").member_axis(1, limit + 1) == "vmap"
    assert TrainConfig(fold_axis="loop").member_axis(4, 0) == "loop"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `TrainConfig.fold_axis` |"))
    assert f'`"auto"`: on one CPU device `"vmap"` up to {limit:,} parameters per member, `"loop"` above' in row
    feats, labels = _problem(n=60)
    folds = make_folds(labels, k=3)
    cell = train_cell("fcn", _config(), feats[:1], labels, folds, TrainConfig(epochs=1))
    assert cell.config["ran"] == {"loop": "step", "fold_axis": "vmap"}  # a tiny model
    monkeypatch.setattr(training, "CPU_VMAP_MAX_PARAMETERS", 100)
    looped = train_cell("fcn", _config(), feats[:1], labels, folds, TrainConfig(epochs=1))
    assert looped.config["ran"] == {"loop": "step", "fold_axis": "loop"}
    assert [r.predictions.tolist() for r in looped.runs] == [r.predictions.tolist() for r in cell.runs]
    with pytest.raises(ValueError, match=r"TrainConfig.fold_axis must be one of \('auto', 'vmap', 'loop'\), got 'x'"):
        TrainConfig(fold_axis="x")


def test_predictions_reuse_one_compiled_program_for_any_row_count():
    """`predict_logits` compiles its batch program once per (kind, model config, output): later calls, of
    other row counts and other params, trace (and so compile) nothing, whether or not a persistent cache is on."""
    from jax import monitoring

    feats, labels = _problem(n=60)
    cell = train_cell("cnn", _config(), feats[:1], labels, make_folds(labels, k=3), TrainConfig(epochs=1))
    params, stats = cell.member(0, 1)
    predict_logits("cnn", _config(), params, [feats[0][:5]], stats)
    compiled = []

    def listen(event: str, seconds: float, **kwargs) -> None:
        if event in ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration"):
            compiled.append(event)

    monitoring.register_event_duration_secs_listener(listen)
    try:
        first = predict_logits("cnn", _config(), cell.member(0, 2)[0], [feats[0][:50]], stats)
        again = predict_logits("cnn", _config(), cell.member(0, 2)[0], [feats[0][:50]], stats)
    finally:
        monitoring.unregister_event_duration_listener(listen)
    assert compiled == [] and first.shape == (50, CLASSES) and np.array_equal(first, again)

