"""The k-fold trainer: all folds (x seeds) of a cell trained by one compiled program.

A *member* is one (seed, fold) pair; the M = len(seeds) * len(folds) members are stacked along a
leading axis (seed-major: member m = s * F + f) and one `jax.vmap`-ed, `jax.jit`-ed train step updates
all of them at once. `train_cells` packs several cells of equal shapes into the same axis (members
(cell, seed, fold)); `train_cell` is its one-cell case. On one CPU device, members of large models instead
take turns through the same program compiled for one member (`TrainConfig.fold_axis`), which measured faster
there. Per member and epoch:

- the training rows are shuffled (numpy, seeded by (seed, fold, epoch)) and cut into batches of
  ``batch_size``, the last one partial. Members are padded to the longest epoch: a padded row has
  mask False, and a step whose rows are all padding leaves params and Adam state untouched (a no-op),
  so each member takes exactly the updates it would take alone;
- the loss is the mean cross-entropy over the valid rows only,
  L = sum_i m_i CE(f(x_i), y_i) / sum_i m_i, and the model ignores padding rows (see models.py);
- Adam (optax.adam, lr 1e-3, b1 0.9, b2 0.999, eps 1e-8);
- after the epoch the validation rows are evaluated; with early stopping (``monitor`` other than "none")
  the best-validation params are kept, and a member whose validation score has not improved for
  ``patience`` epochs stops (its later steps are no-ops); with ``refit``, each member then trains again
  on training + validation rows for its best epoch (`TrainConfig`). A non-finite training loss raises
  `NonFiniteLoss`, naming the member and the epoch.

Features are standardised per member with the mean and standard deviation of its *training* rows
(never validation or test): z = (x - mean) / std, std = 1 where a column is constant.

What one compiled call spans is `TrainConfig.loop`: a step, an epoch, or (``"cell"``) the whole training
of the cell, epochs, validation, patience and best params included, on the device; all give the same
results.

Evaluation batching is fixed because PARROT's OT plan couples the rows of a batch: rows are taken in
ascending row order, ``eval_batch_size`` at a time, the last batch padded and masked.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from parrot_jax import distributed as dist
from parrot_jax import metrics
from parrot_jax.models import MODEL_KINDS, ModelConfig, build_model, num_inputs, penultimate_features
from parrot_jax.splits import Fold

PyTree = Any
LoopForm = Literal["auto", "step", "scan", "unrolled", "cell"]
LOOP_FORMS: tuple[str, ...] = ("auto", "step", "scan", "unrolled", "cell")
FoldAxis = Literal["auto", "vmap", "loop"]
FOLD_AXES: tuple[str, ...] = ("auto", "vmap", "loop")
MONITORS: tuple[str, ...] = ("loss", "accuracy", "uar", "none")
Progress = Callable[[int, dict], None]


#: fold_axis "auto" on one CPU device: members of at most this many parameters train vmapped (all in one
#: program), larger ones one after another. Measured (bench/train_folds.py, README "Defaults"; PARROT, 5 folds):
#: vmap faster at 1.2 M parameters (the demo) and 6.0 M (768 + 768), the loop at 11.8 M and 17.8 M (the paper's).
CPU_VMAP_MAX_PARAMETERS = 8_000_000


@dataclass(frozen=True)
class TrainConfig:
    """How a cell is trained (the paper fixes Adam, lr 1e-3, batch 32, 50 epochs, early stopping).

    epochs: most epochs per member (paper: 50).
    batch_size: training batch (paper: 32); the last batch of an epoch is partial.
    learning_rate: Adam's step size (paper: 1e-3).
    patience: stop a member after this many epochs without a better validation score (the paper uses
        early stopping without a patience; default 10; unused under ``monitor="none"``). None: never stop
        early (best-validation params are still restored).
    monitor: the validation score: "loss" (mean cross-entropy, lower is better, as Keras' EarlyStopping),
        "accuracy" (WA) or "uar" (UA, the mean of the per-class recalls over the classes present in the
        validation rows), higher is better; only a strict improvement counts. "none": no early stopping:
        every member trains ``epochs`` epochs and keeps its last params (validation rows, if any, are only
        reported in ``progress``). Default "none": on Emo-DB it gave the best test UA of the five settings
        compared (README "Early stopping", bench/early_stopping.py); the paper early-stops, on an
        unstated score.
    refit: after early stopping has picked a member's best epoch e* on its validation rows, train the
        member again from its initialisation on training + validation rows for e* epochs, and keep those
        params (the SVM then fits on the same rows, `fit_rows`). Off (default; measured: +0.5 UA points on
        average with early stopping on, -2.4 to +3.2 by model and protocol, README "Early stopping"): the
        best-validation params, fitted on the training rows only. Members without validation rows train
        once, on their training rows.
    standardize: z-score each feature with its training rows' mean and std (default True; the paper
        does not say).
    seeds: model-initialisation / dropout / shuffling seeds, all trained in the same program; results
        are reported per seed and as mean +- std over seeds (default (0,)).
    eval_batch_size: rows per evaluation batch, in ascending row order (default 32, the training batch).
    loop: what one jitted call spans. "step": a Python loop over a jitted vmapped step; "scan": one
        jitted epoch, `lax.scan` over its steps; "unrolled": one jitted epoch, the steps unrolled;
        "cell": the cell's whole training (a `lax.while_loop` over epochs, each a `lax.fori_loop` over its
        steps, then validation, patience and best-params selection, all on the device), the host
        reading progress every ``progress_every`` epochs. "auto" (default) picks by backend from
        measurements (bench/train_folds.py): "step" on CPU, where a scan of steps is pathologically
        slow (an epoch of 3 steps: 15.9 s as a scan, 1.0 s as jitted steps), "cell" on GPU/TPU. Every form gives the same results.
    progress_every: with loop "cell", epochs per device program call (the host reads progress and
        calls ``progress`` for each of them in between); default 1. Ignored by the other forms.
    fold_axis: "vmap" (every member in one program), "loop" (members one after another, each alone, one
        program reused; the reference the vmapped program is tested against) or "auto" (default; see
        `member_axis`): on one CPU device "vmap" for small members and "loop" for large ones (more than
        `CPU_VMAP_MAX_PARAMETERS` parameters), each where it measured faster (README "Defaults",
        bench/train_folds.py); "vmap" on accelerators and wherever the members are sharded over several
        devices or processes. Both give the same results up to float32 rounding.
    """

    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int | None = 10
    monitor: Literal["loss", "accuracy", "uar", "none"] = "none"
    refit: bool = False
    standardize: bool = True
    seeds: tuple[int, ...] = (0,)
    eval_batch_size: int = 32
    loop: LoopForm = "auto"
    fold_axis: FoldAxis = "auto"
    progress_every: int = 1

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "progress_every"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"TrainConfig.{name} must be an int >= 1, got {value!r}")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
                and self.learning_rate > 0):
            raise ValueError(f"TrainConfig.learning_rate must be a finite number > 0, got {self.learning_rate!r}")
        if self.patience is not None and not (isinstance(self.patience, int) and self.patience >= 1):
            raise ValueError(f"TrainConfig.patience must be None or an int >= 1, got {self.patience!r}")
        if self.monitor not in MONITORS:
            raise ValueError(f"TrainConfig.monitor must be one of {MONITORS}, got {self.monitor!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"TrainConfig.seeds must be a non-empty tuple of distinct ints, got {self.seeds!r}")
        if self.loop not in LOOP_FORMS:
            raise ValueError(f"TrainConfig.loop must be one of {LOOP_FORMS}, got {self.loop!r}")
        if self.fold_axis not in FOLD_AXES:
            raise ValueError(f"TrainConfig.fold_axis must be one of {FOLD_AXES}, got {self.fold_axis!r}")

    def loop_form(self) -> str:
        """The loop form to use on the default backend ("auto" resolved)."""
        if self.loop != "auto":
            return self.loop
        return "step" if jax.default_backend() == "cpu" else "cell"

    def member_axis(self, devices: int = 1, parameters: int = 0) -> str:
        """The fold axis to use ("auto" resolved) for members of ``parameters`` parameters each that may be
        spread over ``devices`` devices (all processes' together): on one CPU device "loop" for members of
        more than `CPU_VMAP_MAX_PARAMETERS`, "vmap" for smaller ones; "vmap" everywhere else."""
        if self.fold_axis != "auto":
            return self.fold_axis
        if jax.default_backend() == "cpu" and devices == 1 and parameters > CPU_VMAP_MAX_PARAMETERS:
            return "loop"
        return "vmap"


@dataclass(frozen=True)
class Standardizer:
    """z = (x_i - mean[i]) / scale[i] for each input i; arrays [D_i], or [M, D_i] when stacked."""

    mean: tuple[np.ndarray, ...]
    scale: tuple[np.ndarray, ...]

    def apply(self, features: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        return tuple(((x - m) / s).astype(np.float32) for x, m, s in zip(features, self.mean, self.scale))


@dataclass
class RunResult:
    """One member (seed, fold): its test metrics and predictions."""

    seed: int
    fold: int
    accuracy: float
    macro_f1: float
    uar: float
    confusion: np.ndarray  # int64 [C, C], rows true, columns predicted
    test_indices: np.ndarray  # rows of the cell's feature arrays
    predictions: np.ndarray  # int [n_test]
    probabilities: np.ndarray  # float32 [n_test, C] (softmax of the logits; SVM: one-hot of predictions)
    best_epoch: int | None  # 1-based epoch whose params were kept (None for the SVM)
    epochs_run: int | None

    def to_json(self) -> dict:
        return {
            "seed": self.seed,
            "fold": self.fold,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "uar": self.uar,
            "confusion": self.confusion.tolist(),
            "test_indices": self.test_indices.tolist(),
            "predictions": self.predictions.tolist(),
            "probabilities": np.round(self.probabilities, 6).tolist(),
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
        }


METRIC_NAMES = ("accuracy", "macro_f1", "uar")


@dataclass
class CellResult:
    """All members of one cell. ``params`` / ``standardizer`` are stacked over members (seed-major)."""

    kind: str
    num_classes: int
    seeds: tuple[int, ...]
    runs: list[RunResult]
    config: dict = field(default_factory=dict)
    params: PyTree | None = None
    standardizer: Standardizer | None = None
    seconds: float = 0.0

    def summary(self) -> dict:
        """Per metric: ``mean`` (over seeds of the fold mean), ``std_folds`` (std over folds of the
        per-fold values averaged over seeds) and ``std_seeds`` (std over seeds of the fold means);
        population std (ddof 0)."""
        out = {}
        folds = sorted({r.fold for r in self.runs})
        for name in METRIC_NAMES:
            table = np.array([[getattr(self._run(s, f), name) for f in folds] for s in self.seeds])  # [S, F]
            out[name] = {
                "mean": float(table.mean()),
                "std_folds": float(table.mean(axis=0).std()),
                "std_seeds": float(table.mean(axis=1).std()),
            }
        return out

    def member(self, seed: int, fold: int) -> tuple[PyTree, Standardizer | None]:
        """The params and standardiser of one (seed, fold) member, unstacked, for `predict_logits`."""
        if self.params is None:
            raise ValueError(f"this {self.kind} cell holds no trained params")
        m = self.seeds.index(seed) * len({r.fold for r in self.runs}) + fold
        params = jax.tree_util.tree_map(lambda a: a[m], self.params)
        if self.standardizer is None:
            return params, None
        return params, Standardizer(tuple(a[m] for a in self.standardizer.mean), tuple(a[m] for a in self.standardizer.scale))

    def _run(self, seed: int, fold: int) -> RunResult:
        return next(r for r in self.runs if r.seed == seed and r.fold == fold)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "num_classes": self.num_classes,
            "seeds": list(self.seeds),
            "config": self.config,
            "seconds": self.seconds,
            "summary": self.summary(),
            "runs": [r.to_json() for r in self.runs],
        }


def member_bytes(kind: str, model_config: ModelConfig, dims: Sequence[int], batch_size: int = 32) -> int:
    """Device bytes one member of a cell holds while training, float32: its parameters 7 times (params,
    best params, gradient, Adam's two moments, the updated params and moments in flight) plus the
    activations of one batch through each conv stack (every conv output, its ReLU and its pooled copy
    kept for the backward pass, x 2 for their gradients)."""
    module = build_model(kind, model_config)
    dummy = tuple(jax.ShapeDtypeStruct((2, d), jnp.float32) for d in dims)
    shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), tuple(jnp.zeros(x.shape) for x in dummy)))
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes))
    activations = 0
    if kind != "fcn":
        for d in dims:
            length = d
            for filters in model_config.filters:
                if model_config.conv_padding == "VALID":
                    length -= model_config.kernel_size - 1
                activations += length * filters * 2 + length // model_config.pool_size * filters
                length //= model_config.pool_size
    return 4 * (7 * n_params + 2 * batch_size * activations)


def pack_size(kind: str, model_config: ModelConfig, shapes: Sequence[tuple[int, ...]], members_per_cell: int,
              config: TrainConfig = TrainConfig(), device: jax.Device | None = None, share: float = 0.5) -> int:
    """How many cells of these feature ``shapes`` ([N, D_i] or [N, L+1, D_i] each) to train as one
    program (`train_cells`).

    On CPU: 1 (packing measured no faster there, README "Benchmarks"). On an accelerator: as many as
    fit in ``share`` of the device's free memory (`device.memory_stats()`: bytes_limit - bytes_in_use),
    a cell costing its feature rows plus ``members_per_cell`` x `member_bytes`; at least 1.
    """
    device = device or jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if not stats or "bytes_limit" not in stats:
        return 1
    free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    per_cell = 4 * sum(int(np.prod(shape)) for shape in shapes) + members_per_cell * member_bytes(
        kind, model_config, [shape[-1] for shape in shapes], config.batch_size)
    return max(1, int(share * free // per_cell))


# ----------------------------------------------------------------------------------------------------
# input checks and host-side batching


def _check_inputs(kind: str, num_classes: int, features: Sequence[np.ndarray], labels: np.ndarray, folds: Sequence[Fold]) -> None:
    """Validate the cell's data, raising a ValueError that names the bad value."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind: expected one of {MODEL_KINDS}, got {kind!r}")
    if len(features) != num_inputs(kind):
        raise ValueError(f"model kind {kind!r} takes {num_inputs(kind)} feature array(s), got {len(features)}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"labels: expected non-negative integer class ids [N], got {labels.dtype} {labels.shape}")
    if labels.max() >= num_classes:
        raise ValueError(f"labels: class id {int(labels.max())} found, but model_config.num_classes is {num_classes}")
    for i, x in enumerate(features):
        if x.ndim not in (2, 3) or x.shape[0] != len(labels):
            raise ValueError(f"features[{i}]: expected shape [{len(labels)}, D] (or [{len(labels)}, L+1, D], every "
                             f"layer), got {x.shape}")
        finite = np.isfinite(x).reshape(len(x), -1).all(1)
        if not finite.all():
            raise ValueError(f"features[{i}]: contains NaN or infinite values (rows {np.where(~finite)[0][:5].tolist()}...)")
    if not folds:
        raise ValueError("folds: expected at least one Fold")
    for f, fold in enumerate(folds):
        if len(fold.train) == 0 or len(fold.test) == 0:
            raise ValueError(f"fold {f}: train and test must be non-empty (sizes {len(fold.train)}, {len(fold.test)})")
        everything = np.concatenate([fold.train, fold.val, fold.test])
        if len(np.unique(everything)) != len(everything):
            raise ValueError(f"fold {f}: train, val and test overlap")
        if everything.min() < 0 or everything.max() >= len(labels):
            raise ValueError(f"fold {f}: row indices must lie in [0, {len(labels)})")


def fit_standardizer(features: Sequence[np.ndarray], rows: np.ndarray) -> Standardizer:
    """Mean and std (ddof 0) of each input's ``rows``; a constant column gets scale 1."""
    means, scales = [], []
    for x in features:
        part = np.asarray(x[rows], np.float64)
        sd = part.std(axis=0)
        means.append(part.mean(axis=0).astype(np.float32))
        scales.append(np.where(sd > 0, sd, 1.0).astype(np.float32))
    return Standardizer(tuple(means), tuple(scales))


def epoch_order(seed: int, fold: int, epoch: int, train: np.ndarray) -> np.ndarray:
    """The order in which member (seed, fold) visits its training rows in ``epoch`` (0-based)."""
    return np.random.default_rng([seed, fold, epoch]).permutation(train)


def _pad_batches(order: np.ndarray | None, steps: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """[steps, batch] row indices and validity mask; ``order`` None gives an all-padding epoch."""
    idx = np.zeros(steps * batch, np.int32)
    mask = np.zeros(steps * batch, bool)
    if order is not None:
        idx[: len(order)] = order
        mask[: len(order)] = True
    return idx.reshape(steps, batch), mask.reshape(steps, batch)


def _bucket(n: int) -> int:
    """``n`` rounded up to at most two significant bits: 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, ...

    The sizes the whole-cell program ("cell") takes for its epochs, the steps of an epoch and the validation
    batches, so that epoch counts and fold sizes in one bucket share one compilation. Two sizes per
    doubling: padding under 50% of an axis (a power of two would pad up to 100%, 4x on a table of epochs x
    steps; more sizes, more compilations). The padding is exact and nearly free: padded epochs, steps and
    validation batches are all-mask and never run (loops bounded by the real counts); only the tables grow.
    """
    shift = max(n.bit_length() - 2, 0)
    return -(-n >> shift) << shift


def _eval_batches(rows: Sequence[np.ndarray], batch: int) -> tuple[np.ndarray, np.ndarray]:
    """[M, n_batches, batch] indices/mask: each member's rows in ascending order, chunked and padded."""
    n_batches = max(1, max(-(-len(r) // batch) for r in rows))
    pairs = [_pad_batches(np.sort(r), n_batches, batch) for r in rows]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


# ----------------------------------------------------------------------------------------------------
# the compiled parts


@functools.lru_cache(maxsize=8)
def _programs(kind: str, model_config: ModelConfig, learning_rate: float, form: str) -> "_Programs":
    """Cached so that cells of the same model reuse compiled programs (jit caches per function object)."""
    return _Programs(kind, model_config, learning_rate, form)


class _Programs:
    """The jitted, member-vmapped functions of one (kind, model config, learning rate, loop form)."""

    def __init__(self, kind: str, model_config: ModelConfig, learning_rate: float, form: str):
        self.module = build_model(kind, model_config)
        self.tx = optax.adam(learning_rate)
        self.form = form
        step = jax.vmap(self._step, in_axes=(0, None, None, 0, 0, 0, 0, 0))
        self.step = jax.jit(step, donate_argnums=(0,))
        self.epoch = jax.jit(self._epoch, donate_argnums=(0,))
        self.cell = jax.jit(self._cell, donate_argnums=(0,))
        self.evaluate = jax.jit(jax.vmap(self._logits, in_axes=(0, None, 0, 0, 0, 0)))
        self.keep_best = jax.jit(_keep_where, donate_argnums=(2,))

    def init(self, keys: jax.Array, shapes: tuple[tuple[int, ...], ...]) -> tuple[PyTree, PyTree]:
        """Each member's params and Adam state, stacked [M, ...] numpy arrays, from its key [M] (inputs of
        ``shapes``).

        Not compiled as one program: flax's ``lazy_init`` runs only the initialisers (no forward pass),
        eagerly under `jax.vmap`, so what compiles is one small program per initialiser and shape, shared
        by every model kind (a jitted init compiled the whole forward pass, Sinkhorn included: 1-9 s a
        model on 2 CPU cores); Adam's state (step count and moments) starts at zero, written on the host.
        Bitwise what ``jit(vmap(module.init))`` and ``tx.init`` give (tests/test_training.py)."""

        def one(key: jax.Array) -> PyTree:
            k_params, k_dropout = jax.random.split(jax.random.fold_in(key, 0))
            dummy = tuple(jax.ShapeDtypeStruct((2, *shape), jnp.float32) for shape in shapes)
            return self.module.lazy_init({"params": k_params, "dropout": k_dropout}, dummy, mask=None,
                                         train=False)["params"]

        params = jax.device_get(jax.vmap(one)(keys))
        adam = jax.eval_shape(jax.vmap(self.tx.init), params)
        return params, jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), adam)

    def _inputs(self, xs, mean, scale, idx):
        return tuple((x[idx] - m) / s for x, m, s in zip(xs, mean, scale))

    def _step(self, state, xs, y, mean, scale, idx, mask, key):
        """One Adam step of one member on rows ``idx`` (``mask`` False = padding); all padding: no-op."""
        params, opt_state = state
        inputs = self._inputs(xs, mean, scale, idx)
        n_valid = jnp.sum(mask)

        def loss_fn(p):
            logits = self.module.apply({"params": p}, inputs, mask=mask, train=True, rngs={"dropout": key})
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y[idx])
            return jnp.sum(jnp.where(mask, ce, 0.0)) / jnp.maximum(n_valid, 1)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, new_opt = self.tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        active = n_valid > 0
        keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
        new_state = (jax.tree_util.tree_map(keep, new_params, params), jax.tree_util.tree_map(keep, new_opt, opt_state))
        return new_state, loss * n_valid

    def _epoch(self, state, xs, y, mean, scale, idx, mask, keys):
        """All steps of one epoch in one program: idx/mask [M, steps, B], keys [M, steps]. In the cell form
        ``steps`` is padded (`_bucket`) and only the steps holding a row of some member (a prefix) run, in a
        `lax.fori_loop`; the rest are padding only (no-ops)."""
        vstep = jax.vmap(self._step, in_axes=(0, None, None, 0, 0, 0, 0, 0))
        if self.form == "cell":
            def step(t, carry):
                state, total = carry
                state, loss = vstep(state, xs, y, mean, scale, idx[:, t], mask[:, t], keys[:, t])
                return state, total + loss

            n_steps = jnp.sum(jnp.any(mask, axis=(0, 2)))
            return jax.lax.fori_loop(0, n_steps, step, (state, jnp.zeros(idx.shape[0], jnp.float32)))

        def body(carry, inputs):
            i, m, k = inputs
            return vstep(carry, xs, y, mean, scale, i, m, k)

        per_step = (jnp.swapaxes(idx, 0, 1), jnp.swapaxes(mask, 0, 1), jnp.swapaxes(keys, 0, 1))
        state, losses = jax.lax.scan(body, state, per_step, unroll=self.form == "unrolled")
        return state, losses.sum(axis=0)

    def _cell(self, carry: dict, data: dict, stop: jax.Array) -> dict:
        """Epochs ``carry["epoch"]`` .. ``stop`` - 1 of every member on the device (fewer if all stop).

        Per epoch e, as `_train_members` does on the host: the steps of e (a `lax.fori_loop`; rows
        ``data["idx"][:, e]``, a stopped member's steps masked to no-ops), then the validation loss and
        accuracy in fixed eval batches, best params / score / epoch where the score strictly improved
        (or the member has no validation rows), the patience counters, and the epoch's row of the
        progress history [M, E]. See `_train_on_device` for the fields of ``carry`` and ``data``.
        """
        vlogits = jax.vmap(self._logits, in_axes=(0, None, 0, 0, 0, 0))
        xs, y, mean, scale = data["xs"], data["y"], data["mean"], data["scale"]
        val_idx, val_mask = data["val_idx"], data["val_mask"]  # [M, V, B]
        n_val = jnp.sum(val_mask, axis=(1, 2))
        has_val = n_val > 0
        n_batches = jnp.sum(jnp.any(val_mask, axis=(0, 2)))  # the batches holding a row (a prefix)

        def one_epoch(c: dict) -> dict:
            e, active = c["epoch"], c["active"]
            idx = data["idx"][:, e]  # [M, S, B]
            mask = data["mask"][:, e] & active[:, None, None]
            state, train_loss = self._epoch(c["state"], xs, y, mean, scale, idx, mask,
                                            _step_keys(data["keys"], e, idx.shape[1]))
            def val_batch(b, out):  # the batches after n_batches are padding only (`_bucket`): left zero, masked
                return out.at[b].set(vlogits(state[0], xs, mean, scale, val_idx[:, b], val_mask[:, b]))

            shape = jax.eval_shape(vlogits, state[0], xs, mean, scale, val_idx[:, 0], val_mask[:, 0])
            logits = jax.lax.fori_loop(0, n_batches, val_batch,
                                       jnp.zeros((val_idx.shape[1], *shape.shape), shape.dtype))  # [V, M, B, C]
            logits = jnp.swapaxes(logits, 0, 1)
            labels = y[val_idx]
            picked = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), labels[..., None], axis=-1)[..., 0]
            count = jnp.maximum(n_val, 1)
            val_loss = jnp.where(has_val, -jnp.sum(jnp.where(val_mask, picked, 0.0), axis=(1, 2)) / count, jnp.nan)
            correct = val_mask & (jnp.argmax(logits, axis=-1) == labels)  # [M, V, B]
            val_acc = jnp.where(has_val, jnp.sum(correct, axis=(1, 2)) / count, jnp.nan)
            per_class = jax.nn.one_hot(labels, logits.shape[-1]) * val_mask[..., None]  # [M, V, B, C]
            n_class = jnp.sum(per_class, axis=(1, 2))
            recall = jnp.sum(per_class * correct[..., None], axis=(1, 2)) / jnp.maximum(n_class, 1)
            present = jnp.maximum(jnp.sum(n_class > 0, axis=-1), 1)
            val_uar = jnp.where(has_val, jnp.sum(jnp.where(n_class > 0, recall, 0.0), axis=-1) / present, jnp.nan)
            score = jnp.stack([val_loss, -val_acc, -val_uar, val_loss])[data["monitor"]]
            selects = has_val & (data["monitor"] != MONITORS.index("none"))
            better = active & (~selects | (score < c["best_score"]))
            waited = jnp.where(better, 0, c["waited"] + active)
            history = {name: c["history"][name].at[:, e].set(value) for name, value in
                       (("train_loss", train_loss), ("val_loss", val_loss), ("val_accuracy", val_acc))}
            still = active & ~(selects & (waited >= data["patience"])) & (e + 1 < data["limits"])
            history["active"] = c["history"]["active"].at[:, e].set(still)
            return {
                "state": state,
                "best": _keep_where(better, state[0], c["best"]),
                "best_score": jnp.where(better, score, c["best_score"]),
                "best_epoch": jnp.where(better, e + 1, c["best_epoch"]),
                "waited": waited,
                "epochs_run": c["epochs_run"] + active,
                "active": still,
                "epoch": e + 1,
                "history": history,
            }

        return jax.lax.while_loop(lambda c: (c["epoch"] < stop) & jnp.any(c["active"]), one_epoch, carry)

    def _logits(self, params, xs, mean, scale, idx, mask):
        """Logits [B, C] of one member's evaluation batch."""
        return self.module.apply({"params": params}, self._inputs(xs, mean, scale, idx), mask=mask, train=False)


#: Per member m: ``new[m]`` where ``keep[m]``, else ``old[m]`` (params pytrees stacked over members).
_keep_where = jax.vmap(lambda keep, new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new, old))


@functools.partial(jax.jit, static_argnums=(2,))
def _step_keys(member_keys: jax.Array, epoch: int | jax.Array, steps: int) -> jax.Array:
    """[M, steps] dropout keys: fold_in(fold_in(member key, 1 + epoch), step) (one small compiled program per
    member count and steps, called once per epoch)."""
    per_epoch = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, 1), epoch))(member_keys)
    return jax.vmap(lambda k: jax.vmap(lambda s: jax.random.fold_in(k, s))(jnp.arange(steps)))(per_epoch)


def _member_keys(members: Sequence[tuple[int, int, int]]) -> jax.Array:
    """One key per (cell, seed, fold) member: fold_in(PRNGKey(seed), fold), the same in every cell."""
    return jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), f) for _, s, f in members])


def _evaluate(programs: _Programs, params, xs, mean, scale, rows: Sequence[np.ndarray], batch: int) -> list[np.ndarray]:
    """Each member's logits [len(rows[m]), C] on its rows (ascending order), in fixed eval batches."""
    idx, mask = _eval_batches(rows, batch)
    chunks = [dist.gather(programs.evaluate(params, xs, mean, scale, idx[:, b], mask[:, b])) for b in range(idx.shape[1])]
    logits = np.concatenate(chunks, axis=1)  # [M, n_batches * batch, C]
    return [logits[m, : len(r)] for m, r in enumerate(rows)]


class NonFiniteLoss(ValueError):
    """A member's training (or validation) loss became NaN or infinite; ``cell`` indexes the packed cells
    (`train_cells`), ``fold`` is 0-based, ``epoch`` 1-based."""

    def __init__(self, cell: int, seed: int, fold: int, epoch: int, value: float, what: str = "training loss"):
        self.cell, self.seed, self.fold, self.epoch = cell, seed, fold, epoch
        super().__init__(f"seed {seed}, fold {fold} (0-based), epoch {epoch}: {what} is {value} (not finite)")


def _check_finite(members: Sequence[tuple[int, int, int]], losses: np.ndarray, ran: np.ndarray, first: int,
                  what: str = "training loss") -> None:
    """Raise `NonFiniteLoss` for the first (epoch, member) whose loss (`what`) is not finite, among the
    members that ran in it; ``losses`` / ``ran`` [epochs, M] cover epochs ``first`` (0-based) on. A NaN
    validation loss would otherwise never count as better, and the member would keep its initial params."""
    bad = ran & ~np.isfinite(losses)
    if bad.any():
        e, m = np.argwhere(bad)[0]
        c, s, f = members[m]
        raise NonFiniteLoss(c, s, f, first + int(e) + 1, float(losses[e, m]), what)


def _train_members(
    programs: _Programs,
    members: Sequence[tuple[int, int, int]],
    folds: Sequence[Fold],
    n_rows: int,
    xs: tuple[jax.Array, ...],
    y: jax.Array,
    labels: np.ndarray,
    stats: Standardizer,
    initial: tuple[PyTree, PyTree],
    config: TrainConfig,
    progress: Progress | None,
    mesh: Mesh | None = None,
    limits: Sequence[int] | None = None,
) -> tuple[PyTree, list[int], list[int]]:
    """Train the (cell, seed, fold) members together; return (best params stacked [M, ...], best
    epochs, epochs run). Member (c, s, f) reads rows c * n_rows + r of ``xs`` / ``labels`` (the
    cells' rows concatenated, see `train_cells`) and standardises with row m of ``stats`` [M, D_i]; it starts
    from row m of ``initial`` (params, Adam state), which the training consumes (donated buffers).
    ``limits``: most epochs of each member (default ``config.epochs`` each; the refit pass's e*).
    A member whose training loss is not finite raises `NonFiniteLoss` (the first such member and epoch).

    With a `mesh`, the member axis is sharded over its devices, padded to a multiple of the device
    count with copies of the last member (parrot_jax.distributed), and the copies dropped at the end.
    """
    n_real = len(members)
    place = (lambda tree: dist.shard_leading(tree, mesh)) if mesh is not None else (lambda tree: tree)  # noqa: E731
    if mesh is not None:
        members = list(members) + [members[-1]] * (dist.padded_length(n_real, mesh) - n_real)
    M = len(members)
    mean, scale = place((tuple(map(jnp.asarray, stats.mean)), tuple(map(jnp.asarray, stats.scale))))
    keys = place(_member_keys(members))
    state = place(initial) if mesh is not None else jax.device_put(initial)  # the mesh pads: copies of the last
    best = jax.tree_util.tree_map(jnp.copy, state[0])
    offsets = [c * n_rows for c, _, _ in members]
    train_rows = [folds[f].train for _, _, f in members]
    val_rows = [folds[f].val + o for (_, _, f), o in zip(members, offsets)]
    has_val = np.array([len(v) > 0 for v in val_rows])
    steps = max(-(-len(r) // config.batch_size) for r in train_rows)
    limits = np.array([config.epochs] * n_real if limits is None else list(limits), np.int32)
    limits = np.concatenate([limits, np.repeat(limits[-1:], M - n_real)])  # the mesh's padding copies
    if programs.form == "cell":
        best, best_epoch, epochs_run = _train_on_device(
            programs, members, n_real, folds, offsets, val_rows, steps, xs, y, mean, scale, keys, state, config, progress,
            place, limits)
        if mesh is not None:
            best = dist.gather(best, n_real)
        return best, best_epoch[:n_real].tolist(), epochs_run[:n_real].tolist()
    best_score = np.full(M, np.inf)
    best_epoch = np.zeros(M, int)
    epochs_run = np.zeros(M, int)
    waited = np.zeros(M, int)
    active = np.ones(M, bool)

    for epoch in range(config.epochs):
        pairs = [
            _pad_batches(epoch_order(s, f, epoch, folds[f].train) + o if active[m] else None, steps, config.batch_size)
            for m, ((_, s, f), o) in enumerate(zip(members, offsets))
        ]
        idx, mask = place((np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])))
        step_keys = _step_keys(keys, epoch, steps)
        if programs.form == "step":
            loss_sum = jnp.zeros(M)
            for t in range(steps):
                state, loss = programs.step(state, xs, y, mean, scale, idx[:, t], mask[:, t], step_keys[:, t])
                loss_sum = loss_sum + loss
        else:
            state, loss_sum = programs.epoch(state, xs, y, mean, scale, idx, mask, step_keys)
        epochs_run += active
        train_loss = np.asarray(dist.gather(loss_sum))
        _check_finite(members[:n_real], train_loss[None, :n_real], active[None, :n_real], epoch)

        val_loss, val_acc, val_uar = np.full(M, np.nan), np.full(M, np.nan), np.full(M, np.nan)
        if has_val.any():
            logits = _evaluate(programs, state[0], xs, mean, scale, val_rows, config.eval_batch_size)
            for m, (lg, rows) in enumerate(zip(logits, val_rows)):
                if len(rows):
                    logp = jax.nn.log_softmax(lg, axis=-1)
                    val_loss[m] = -float(np.mean(np.take_along_axis(np.asarray(logp), labels[rows][:, None], 1)))
                    val_acc[m] = float(np.mean(lg.argmax(-1) == labels[rows]))
                    if config.monitor == "uar":  # the only use of it
                        val_uar[m] = metrics.uar(labels[rows], lg.argmax(-1))
        score = {"loss": val_loss, "accuracy": -val_acc, "uar": -val_uar, "none": val_loss}[config.monitor]
        selects = has_val & (config.monitor != "none")
        _check_finite(members[:n_real], val_loss[None, :n_real], (active & selects)[None, :n_real], epoch,
                      "validation loss")
        # without validation rows a member keeps its latest params
        better = active & (~selects | (score < best_score))
        best = programs.keep_best(jnp.asarray(better), state[0], best)
        best_score = np.where(better, score, best_score)
        best_epoch = np.where(better, epoch + 1, best_epoch)
        waited = np.where(better, 0, waited + active)
        if config.patience is not None:
            active &= ~(selects & (waited >= config.patience))
        active &= epoch + 1 < limits
        if progress is not None:
            n_train = np.array([len(r) for r in train_rows])
            progress(epoch + 1, {
                "train_loss": (train_loss / n_train)[:n_real],
                "val_loss": val_loss[:n_real],
                "val_accuracy": val_acc[:n_real],
                "active": active[:n_real].copy(),
            })
        if not active.any():
            break
    if mesh is not None:
        best = dist.gather(best, n_real)
    return best, best_epoch[:n_real].tolist(), epochs_run[:n_real].tolist()


def _train_on_device(programs, members, n_real, folds, offsets, val_rows, steps, xs, y, mean, scale, keys, state,
                     config, progress, place, limits) -> tuple[PyTree, np.ndarray, np.ndarray]:
    """`_train_members`' epochs as calls of the "cell" program, ``config.progress_every`` epochs each
    (all epochs in one call when there is no ``progress`` callback).

    The host builds every epoch's batch tables once ([M, E, steps, B] rows and mask, the same
    `epoch_order` shuffles as the host loop); a stopped member's later epochs are masked on the device.
    The epochs (tables and history), the steps and the validation batches are padded to `_bucket` sizes, so
    that cells whose epoch counts or fold sizes fall in one bucket share one program; the padding never runs
    (the loops stop at ``E``, at the last step holding a row, at the last validation batch holding a row).
    """
    M, E, E_pad, steps = len(members), config.epochs, _bucket(config.epochs), _bucket(steps)
    tables = [[_pad_batches(epoch_order(s, f, e, folds[f].train) + o if e < E else None, steps, config.batch_size)
               for e in range(E_pad)] for (_, s, f), o in zip(members, offsets)]
    idx = np.stack([np.stack([t[0] for t in member]) for member in tables])
    mask = np.stack([np.stack([t[1] for t in member]) for member in tables])
    val_idx, val_mask = _eval_batches(val_rows, config.eval_batch_size)
    padding = ((0, 0), (0, _bucket(val_idx.shape[1]) - val_idx.shape[1]), (0, 0))
    val_idx, val_mask = np.pad(val_idx, padding), np.pad(val_mask, padding)
    data = {
        "xs": xs, "y": y, "mean": mean, "scale": scale,
        "monitor": jnp.asarray(MONITORS.index(config.monitor), jnp.int32),
        "limits": jnp.asarray(limits),
        "patience": jnp.asarray(E + 1 if config.patience is None else config.patience, jnp.int32),
        "keys": keys,
        **dict(zip(("idx", "mask", "val_idx", "val_mask"), place((idx, mask, val_idx, val_mask)))),
    }
    per_member = place({
        "best_score": np.full(M, np.inf, np.float32),
        "best_epoch": np.zeros(M, np.int32),
        "waited": np.zeros(M, np.int32),
        "epochs_run": np.zeros(M, np.int32),
        "active": np.ones(M, bool),
        "history": {"train_loss": np.zeros((M, E_pad), np.float32), "val_loss": np.zeros((M, E_pad), np.float32),
                    "val_accuracy": np.zeros((M, E_pad), np.float32), "active": np.zeros((M, E_pad), bool)},
    })
    carry = {"state": state, "best": jax.tree_util.tree_map(jnp.copy, state[0]), "epoch": jnp.asarray(0, jnp.int32),
             **per_member}
    n_train = np.array([len(folds[f].train) for _, _, f in members[:n_real]])
    chunk = config.progress_every if progress is not None else E  # without a progress callback: one call
    done = 0
    while done < E:
        carry = programs.cell(carry, data, jnp.asarray(min(done + chunk, E), jnp.int32))
        reached = int(carry["epoch"])
        history = dist.gather(carry["history"], n_real)
        ran = np.arange(done, reached)[None, :] < np.asarray(dist.gather(carry["epochs_run"]))[:n_real, None]
        _check_finite(members[:n_real], history["train_loss"][:, done:reached].T, ran.T, done)
        if config.monitor != "none":
            selects = np.array([len(val_rows[m]) > 0 for m in range(n_real)])[None, :]
            _check_finite(members[:n_real], history["val_loss"][:, done:reached].T, ran.T & selects, done,
                          "validation loss")
        if progress is not None:
            for e in range(done, reached):
                progress(e + 1, {"train_loss": history["train_loss"][:, e] / n_train, "val_loss": history["val_loss"][:, e],
                                 "val_accuracy": history["val_accuracy"][:, e], "active": history["active"][:, e].copy()})
        if reached < min(done + chunk, E):  # every member has stopped
            break
        done = reached
    return carry["best"], dist.gather(carry["best_epoch"]), dist.gather(carry["epochs_run"])


# ----------------------------------------------------------------------------------------------------
# public entry points


def train_cell(
    kind: str,
    model_config: ModelConfig,
    features: Sequence[np.ndarray],
    labels: np.ndarray,
    folds: Sequence[Fold],
    config: TrainConfig = TrainConfig(),
    progress: Progress | None = None,
    mesh: Mesh | None = None,
) -> CellResult:
    """Train ``kind`` on every (seed, fold) of the cell and evaluate each on its test rows.

    features: 1 or 2 float arrays [N, D_i] (as the kind needs); labels: int class ids [N] in [0, C).
    progress(epoch, metrics) is called after each epoch with per-member arrays ``train_loss``,
    ``val_loss``, ``val_accuracy`` and ``active`` (seed-major member order), and ``stage`` ("select", or
    "refit"), ``pass`` and ``passes``: under fold_axis "vmap" one pass holds every member; under "loop" the
    members train one after another, one pass each, and the arrays hold that pass's member alone.
    mesh: the devices the members (folds x seeds) are sharded over (default `distributed.make_mesh()`:
    all devices, or those `$PARROT_DEVICES` names); with one device and one process nothing is placed.
    Results do not depend on it (tests/test_distributed.py).
    This is `train_cells` with one cell.
    """
    return train_cells(kind, model_config, [features], labels, folds, config, progress, mesh)[0]


def train_cells(
    kind: str,
    model_config: ModelConfig,
    cells: Sequence[Sequence[np.ndarray]],
    labels: np.ndarray,
    folds: Sequence[Fold],
    config: TrainConfig = TrainConfig(),
    progress: Progress | None = None,
    mesh: Mesh | None = None,
) -> list[CellResult]:
    """Train K cells of one kind and model config in ONE program; one `CellResult` per cell.

    cells: each cell's feature arrays (as `train_cell`'s ``features``), every cell with the same
    shapes; labels and folds are shared (one corpus), e.g. Table 2's (A(B), W) and (A(B), H).
    Members are (cell, seed, fold), cell-major: m = (c * S + s) * F + f; ``progress`` gets arrays
    over all of them. Each member reads its own cell's rows and standardises with its own fold's
    statistics of its own cell; its RNG key depends on (seed, fold) only, as when its cell trains alone.

    Layout: the cells' rows are concatenated into one [K * N, D_i] array per input, and member
    (c, s, f) indexes rows c * N + r. Chosen over a stacked cell axis [K, N, D_i] because the compiled
    step stays what it is for one cell (one row gather x[idx]; a cell index per member would add a
    second, batched index into the program), and one cell is simply offset 0.

    Results equal each cell trained alone (tests/test_training.py): identical predictions, params
    within float32 rounding. ``seconds`` of each result is the wall time of the whole packed run.
    """
    start = time.perf_counter()
    labels = np.asarray(labels)
    num_classes = model_config.num_classes
    if not cells:
        raise ValueError("cells: expected at least one cell's features")
    for c, features in enumerate(cells):
        try:
            _check_inputs(kind, num_classes, features, labels, folds)
        except ValueError as error:
            raise ValueError(f"cell {c}: {error}") from None
    shapes = [tuple(np.shape(x) for x in features) for features in cells]
    if len(set(shapes)) != 1:
        raise ValueError(f"cells: every packed cell needs the same feature shapes; got {shapes}")
    cells = [[np.asarray(x, np.float32) for x in features] for features in cells]
    n_inputs, n_rows, K = len(cells[0]), len(labels), len(cells)

    members = [(c, s, f) for c in range(K) for s in config.seeds for f in range(len(folds))]
    programs = _programs(kind, model_config, config.learning_rate, config.loop_form())
    rows = tuple(np.concatenate([features[i] for features in cells]) if K > 1 else cells[0][i] for i in range(n_inputs))
    all_labels = np.tile(labels.astype(np.int32), K)
    mesh = mesh if mesh is not None else dist.make_mesh()
    # every member's initial params and Adam state, once (the refit pass starts from them again)
    initial = programs.init(_member_keys(members), tuple(tuple(int(d) for d in x.shape[1:]) for x in rows))
    axis = config.member_axis(mesh.devices.size, _parameter_count(initial[0]) // len(members))
    sharded = axis == "vmap" and (mesh.devices.size > 1 or jax.process_count() > 1)
    if sharded:  # every device holds the whole data
        xs, y = dist.replicate((rows, all_labels), mesh)
    else:
        xs, y = tuple(jnp.asarray(x) for x in rows), jnp.asarray(all_labels)
    # "vmap": one group of every member; "loop": one group per member, each the same one-member program
    groups = [list(range(len(members)))] if axis == "vmap" else [[m] for m in range(len(members))]

    def fit(fit_folds: Sequence[Fold], limits: Sequence[int] | None,
            stage: str) -> tuple[list[PyTree], Standardizer, list, list]:
        """Every member trained on ``fit_folds`` (at most ``limits[m]`` epochs): each group's params, the
        statistics, the epochs."""
        stats = _member_stats(cells, members, fit_folds, config.standardize)
        parts, best_epochs, epochs_run = [], [], []
        for g, group in enumerate(groups):
            staged = None if progress is None else functools.partial(_staged, progress, {
                "stage": stage, "pass": g, "passes": len(groups)})
            group_initial = jax.tree_util.tree_map(lambda a: a[group], initial)  # numpy rows, a copy
            p, b, e = _train_members(programs, [members[m] for m in group], fit_folds, n_rows, xs, y, all_labels,
                                     _rows_of(stats, group), group_initial, config, staged,
                                     mesh if sharded else None, None if limits is None else [limits[m] for m in group])
            parts.append(p)
            best_epochs += b
            epochs_run += e
        return parts, stats, best_epochs, epochs_run

    parts, member_stats, best_epochs, epochs_run = fit(folds, None, "select")
    if config.refit and any(len(fold.val) for fold in folds):
        whole = [Fold(fold.fit_rows(True), np.empty(0, np.int64), fold.test) for fold in folds]
        parts, member_stats, _, _ = fit(whole, best_epochs, "refit")

    logits = []
    for group, part in zip(groups, parts):  # each group evaluated by the program it trained with
        stats = _rows_of(member_stats, group)
        test_rows = [folds[f].test + c * n_rows for c, _, f in (members[m] for m in group)]
        logits += _evaluate(programs, part, xs, tuple(map(jnp.asarray, stats.mean)),
                            tuple(map(jnp.asarray, stats.scale)), test_rows, config.eval_batch_size)
    params = jax.device_get(parts[0] if len(parts) == 1 else
                            jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *parts))
    seconds = time.perf_counter() - start
    per = len(members) // K
    results = []
    for c in range(K):
        part = slice(c * per, (c + 1) * per)
        runs = []
        for m in range(part.start, part.stop):
            _, s, f = members[m]
            probs = np.asarray(jax.nn.softmax(logits[m], axis=-1), np.float32)
            test = folds[f].test
            runs.append(_run_result(s, f, labels[test], probs, test, num_classes, best_epochs[m], epochs_run[m]))
        results.append(CellResult(
            kind=kind,
            num_classes=num_classes,
            seeds=tuple(config.seeds),
            runs=runs,
            config={"train": asdict(config), "model": _config_dict(model_config),
                    "ran": {"loop": programs.form, "fold_axis": axis}},
            params=jax.tree_util.tree_map(lambda a: a[part], params),
            standardizer=_rows_of(member_stats, part) if config.standardize else None,
            seconds=seconds,
        ))
    return results


def _staged(progress: Progress, where: dict, epoch: int, info: dict) -> None:
    """``progress`` with the stage and pass of the epoch added to its metrics."""
    progress(epoch, {**info, **where})


def _parameter_count(params: PyTree) -> int:
    """The number of parameters in ``params`` (every member's, when stacked)."""
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params))


def _rows_of(stats: Standardizer, rows: Sequence[int]) -> Standardizer:
    """The standardisers of members ``rows`` of stacked ``stats``."""
    return Standardizer(tuple(a[rows] for a in stats.mean), tuple(a[rows] for a in stats.scale))


def _member_stats(cells: Sequence[Sequence[np.ndarray]], members: Sequence[tuple[int, int, int]],
                  folds: Sequence[Fold], standardize: bool) -> Standardizer:
    """Each member's standardiser [M, D_i] per input: its cell's statistics over its fold's ``train`` rows
    (mean 0, scale 1 without ``standardize``)."""
    if not standardize:
        return Standardizer(tuple(np.zeros((len(members), *x.shape[1:]), np.float32) for x in cells[0]),
                            tuple(np.ones((len(members), *x.shape[1:]), np.float32) for x in cells[0]))
    fitted = {(c, f): fit_standardizer(cells[c], folds[f].train) for c, _, f in members}
    return Standardizer(tuple(np.stack([fitted[c, f].mean[i] for c, _, f in members]) for i in range(len(cells[0]))),
                        tuple(np.stack([fitted[c, f].scale[i] for c, _, f in members]) for i in range(len(cells[0]))))


def _run_result(seed, fold, y_true, probs, rows, num_classes, best_epoch, epochs_run) -> RunResult:
    pred = probs.argmax(axis=-1)
    return RunResult(
        seed=seed,
        fold=fold,
        accuracy=metrics.accuracy(y_true, pred),
        macro_f1=metrics.macro_f1(y_true, pred),
        uar=metrics.uar(y_true, pred),
        confusion=metrics.confusion(y_true, pred, num_classes),
        test_indices=np.asarray(rows),
        predictions=pred,
        probabilities=probs,
        best_epoch=best_epoch,
        epochs_run=epochs_run,
    )


def _config_dict(model_config: ModelConfig) -> dict:
    try:
        return asdict(model_config)
    except TypeError:
        return {"repr": repr(model_config)}


def predict_logits(
    kind: str,
    model_config: ModelConfig,
    params: PyTree,
    features: Sequence[np.ndarray],
    standardizer: Standardizer | None,
    eval_batch_size: int = 32,
    output: Literal["logits", "penultimate"] = "logits",
) -> np.ndarray:
    """Logits float32 [N, C] of new rows with one member's params (see `CellResult.member`); with
    ``output="penultimate"``, the input of the model's last Dense instead [N, hidden]
    (`models.penultimate_features`).

    Rows are evaluated in the given order, ``eval_batch_size`` at a time (the last batch padded and
    masked), as the trainer evaluates test rows; standardised first when ``standardizer`` is given.
    """
    if len(features) != num_inputs(kind):
        raise ValueError(f"model kind {kind!r} takes {num_inputs(kind)} feature array(s), got {len(features)}")
    n = len(features[0])
    for i, x in enumerate(features):
        if x.ndim not in (2, 3) or len(x) != n:
            raise ValueError(f"features[{i}]: expected shape [{n}, D] (or [{n}, L+1, D]), got {x.shape}")
    if standardizer is not None:
        features = standardizer.apply(features)
    apply = _apply_program(kind, model_config, output)
    idx, mask = _pad_batches(np.arange(n), -(-n // eval_batch_size), eval_batch_size)
    xs = [np.asarray(x, np.float32) for x in features]
    out = [np.asarray(apply(params, tuple(x[i] for x in xs), jnp.asarray(m))) for i, m in zip(idx, mask)]
    return np.concatenate(out)[:n]


@functools.lru_cache(maxsize=16)
def _apply_program(kind: str, model_config: ModelConfig, output: str) -> Callable:
    """`predict_logits`' jitted batch function, one per (kind, model config, output), so that every call
    (each fold's activations, each prediction) reuses its compiled program."""
    module = build_model(kind, model_config)
    if output == "penultimate":
        return jax.jit(lambda p, inputs, mask: penultimate_features(module, p, inputs, mask))
    return jax.jit(lambda p, inputs, mask: module.apply({"params": p}, inputs, mask=mask, train=False))
