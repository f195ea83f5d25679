"""Folds x seeds sharded over devices against one device, measured side by side in one run.

    # one cell on 4 simulated CPU devices vs 1 (the flag must be set before jax is imported)
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python bench/sharded_folds.py
    # 4 cells of equal shapes: one after another, then packed into one program (train_cells)
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python bench/sharded_folds.py --pack 4 --seeds 1
    # a full Table 2 (every pair x Concatenation, PARROT) on CREMA-D-sized random features, all devices
    python bench/sharded_folds.py --table2 --rows 7442 --out table2.jsonl

`compare` (default) trains one cell twice in the same process, on a mesh of the first device and on
a mesh of all devices, and prints both wall times (compilation included, and the median epoch after
the first), their ratio, and whether the results are identical (predictions, metrics, best epochs;
largest probability difference).

`--pack K` trains K cells of equal shapes (each its own random features; shared labels and folds) on
all chosen devices, first one cell after another (`train_cell`), then as one program
(`train_cells`, members cell x seed x fold), and prints both wall times (compilation included, and
the summed steady epochs), their ratio, and whether the results are identical.

`--table2` trains the 25 encoder pairs of the paper's Table 2 (registry dims: A(T) 960, A(S) 1920,
A(B) 3840, W/H/W2/U 768, M 1280) x (concat, parrot) on random features with random labels, with the
trainer's default configuration (the paper's: Adam 1e-3, batch 32, at most 50 epochs, early stopping),
and prints each cell's time, epochs run and per-epoch time, and the total wall time. Random features
carry no signal, so early stopping ends cells early; the per-epoch times give the 50-epoch cost.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from parrot_jax import allocator

allocator.keep_freed_memory_if_wanted()  # before JAX allocates anything (PARROT_KEEP_FREED_MEMORY=0: off)

import numpy as np


def random_data(rows: int, dims: tuple[int, ...], classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    features = [rng.normal(size=(rows, d)).astype(np.float32) for d in dims]
    return features, rng.integers(0, classes, size=rows)


class EpochClock:
    """progress callback: wall time at the end of each epoch."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ends: list[float] = []

    def __call__(self, epoch: int, stats: dict) -> None:
        self.ends.append(time.perf_counter())

    def steady_epoch(self) -> float:
        """Median epoch time after the first (the first includes compilation); nan with < 2 epochs."""
        return float(np.median(np.diff(self.ends))) if len(self.ends) > 1 else float("nan")


def compare(args: argparse.Namespace) -> None:
    import jax

    from parrot_jax import distributed as dist
    from parrot_jax.models import ModelConfig
    from parrot_jax.splits import make_folds
    from parrot_jax.training import TrainConfig, train_cell

    dims = tuple(int(d) for d in args.dims.split(","))
    features, labels = random_data(args.rows, dims, args.classes)
    folds = make_folds(labels, k=args.folds)
    config = TrainConfig(epochs=args.epochs, seeds=tuple(range(args.seeds)), patience=None)
    devices = dist.select_devices(args.devices)
    members = args.folds * args.seeds
    print(f"backend {jax.default_backend()}, {len(devices)} devices; kind {args.kind}, dims {dims}, "
          f"{args.rows} rows, {members} members (folds x seeds), {args.epochs} epochs, loop {config.loop_form()}")
    results = {}
    for label, mesh in (("1 device", dist.make_mesh(devices[:1])), (f"{len(devices)} devices", dist.make_mesh(devices))):
        clock = EpochClock()
        result = train_cell(args.kind, ModelConfig(num_classes=args.classes), features, labels, folds, config, clock,
                            mesh=mesh)
        wall = time.perf_counter() - clock.start
        results[label] = (result, wall, clock.steady_epoch())
        lanes = dist.padded_length(members, mesh)
        print(f"{label:>10}: {lanes} lanes ({lanes // mesh.devices.size} per device), wall {wall:7.2f} s "
              f"(compile included), steady epoch {clock.steady_epoch():6.3f} s")
    (one, t1, e1), (many, tn, en) = results.values()
    same_pred = all(np.array_equal(a.predictions, b.predictions) for a, b in zip(one.runs, many.runs))
    same_metrics = all(
        (a.accuracy, a.macro_f1, a.uar, a.best_epoch) == (b.accuracy, b.macro_f1, b.uar, b.best_epoch)
        for a, b in zip(one.runs, many.runs)
    )
    prob_diff = max(float(np.abs(a.probabilities - b.probabilities).max()) for a, b in zip(one.runs, many.runs))
    print(f"identical predictions: {same_pred}; identical metrics and best epochs: {same_metrics}; "
          f"max |probability difference|: {prob_diff:.3g}")
    print(f"wall-time ratio sharded / one device: {tn / t1:.2f} (steady epoch: {en / e1:.2f})")


def pack(args: argparse.Namespace) -> None:
    import jax

    from parrot_jax import distributed as dist
    from parrot_jax.models import ModelConfig
    from parrot_jax.splits import make_folds
    from parrot_jax.training import TrainConfig, train_cell, train_cells

    dims = tuple(int(d) for d in args.dims.split(","))
    _, labels = random_data(args.rows, dims, args.classes)
    cells = [random_data(args.rows, dims, args.classes, seed=c + 1)[0] for c in range(args.pack)]
    folds = make_folds(labels, k=args.folds)
    config = TrainConfig(epochs=args.epochs, seeds=tuple(range(args.seeds)), patience=None)
    model = ModelConfig(num_classes=args.classes)
    mesh = dist.make_mesh(dist.select_devices(args.devices))
    members = args.folds * args.seeds
    print(f"backend {jax.default_backend()}, {mesh.devices.size} devices; kind {args.kind}, dims {dims}, "
          f"{args.rows} rows, {args.pack} cells x {members} members (folds x seeds), {args.epochs} epochs, "
          f"loop {config.loop_form()}")
    start, steady, alone = time.perf_counter(), 0.0, []
    for features in cells:
        clock = EpochClock()
        alone.append(train_cell(args.kind, model, features, labels, folds, config, clock, mesh=mesh))
        steady += clock.steady_epoch()
    t_alone = time.perf_counter() - start
    lanes = dist.padded_length(members, mesh)
    print(f"{'alone':>7}: {args.pack} programs of {lanes} lanes, wall {t_alone:7.2f} s (compile included), "
          f"steady epochs summed {steady:6.3f} s")
    clock = EpochClock()
    packed = train_cells(args.kind, model, cells, labels, folds, config, clock, mesh=mesh)
    t_packed = time.perf_counter() - clock.start
    lanes = dist.padded_length(args.pack * members, mesh)
    print(f"{'packed':>7}: 1 program of {lanes} lanes, wall {t_packed:7.2f} s (compile included), "
          f"steady epoch {clock.steady_epoch():6.3f} s")
    pairs = [(a, b) for x, y in zip(alone, packed) for a, b in zip(x.runs, y.runs)]
    same = all(np.array_equal(a.predictions, b.predictions) and a.best_epoch == b.best_epoch for a, b in pairs)
    prob_diff = max(float(np.abs(a.probabilities - b.probabilities).max()) for a, b in pairs)
    param_diff = max(float(np.abs(p - q).max()) for x, y in zip(alone, packed)
                     for p, q in zip(jax.tree_util.tree_leaves(x.params), jax.tree_util.tree_leaves(y.params)))
    print(f"identical predictions and best epochs: {same}; max |probability difference| {prob_diff:.3g}, "
          f"max |param difference| {param_diff:.3g}")
    print(f"wall-time ratio packed / alone: {t_packed / t_alone:.2f} (steady epochs: {clock.steady_epoch() / steady:.2f})")


def table2(args: argparse.Namespace) -> None:
    import jax

    from parrot_jax import distributed as dist
    from parrot_jax.encoders import registry
    from parrot_jax.grid import TABLE2_METHODS, pairs_for
    from parrot_jax.models import ModelConfig
    from parrot_jax.splits import make_folds
    from parrot_jax.training import TrainConfig, train_cell

    if args.cache:
        jax.config.update("jax_compilation_cache_dir", args.cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    names = [n for n, e in registry.ENCODERS.items() if e.family in ("mamba", "attention")]
    pairs, _ = pairs_for(names)
    dims = {n: registry.ENCODERS[n].dim for n in names}
    matrices, labels = random_data(args.rows, tuple(dims.values()), args.classes)
    features = dict(zip(names, matrices))
    folds = make_folds(labels, k=args.folds)
    config = TrainConfig(seeds=tuple(range(args.seeds)))
    model = ModelConfig(num_classes=args.classes)
    if args.devices is not None:
        os.environ[dist.ENV_DEVICES] = args.devices  # the trainer's default mesh reads it
    mesh = dist.make_mesh()
    print(f"backend {jax.default_backend()}, devices {mesh.devices.size} ({jax.devices()[0].device_kind}); "
          f"{len(pairs)} pairs x {TABLE2_METHODS}; {args.rows} rows, {args.classes} classes, {args.folds} folds, "
          f"seeds {config.seeds}; loop {config.loop_form()}", flush=True)
    out = Path(args.out).open("w") if args.out else None
    start, done = time.perf_counter(), 0
    cells = [(a, b, kind) for a, b in pairs for kind in TABLE2_METHODS]
    for a, b, kind in cells[args.skip_cells:]:
        if args.budget and time.perf_counter() - start > args.budget:
            break
        clock = EpochClock()
        result = train_cell(kind, model, [features[a], features[b]], labels, folds, config, clock)
        seconds = time.perf_counter() - clock.start
        runs = [r.epochs_run for r in result.runs]
        record = {"pair": f"{a}+{b}", "dims": [dims[a], dims[b]], "kind": kind, "seconds": round(seconds, 2),
                  "epochs_run": runs, "first_epoch_s": round(clock.ends[0] - clock.start, 2),
                  "steady_epoch_s": round(clock.steady_epoch(), 4),
                  "accuracy": round(result.summary()["accuracy"]["mean"], 4)}
        print(json.dumps(record), flush=True)
        if out:
            out.write(json.dumps(record) + "\n")
            out.flush()
        done += 1
    total = time.perf_counter() - start
    print(f"Table 2: {done} of {2 * len(pairs)} cells in {total:.1f} s wall", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table2", action="store_true", help="a full Table 2 on random features (see above)")
    p.add_argument("--pack", type=int, default=0, help="K cells alone vs packed into one program (see above)")
    p.add_argument("--devices", default=None, help="all | N | ids:i,j (default: $PARROT_DEVICES or all)")
    p.add_argument("--kind", default="parrot", help="compare: model kind (default parrot)")
    p.add_argument("--dims", default="384,96", help="compare: feature dims of the two inputs")
    p.add_argument("--rows", type=int, default=535, help="rows (default 535, Emo-DB; CREMA-D: 7442)")
    p.add_argument("--classes", type=int, default=None, help="classes (default 7 compare, 6 table2)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", type=int, default=None, help="seeds (default 2 compare, 1 table2)")
    p.add_argument("--epochs", type=int, default=3, help="compare: epochs (no early stopping)")
    p.add_argument("--budget", type=float, default=0.0, help="table2: start no cell after this many seconds")
    p.add_argument("--cache", default=None, help="table2: persistent compilation cache folder")
    p.add_argument("--skip-cells", type=int, default=0, help="table2: skip the first N cells (resume a run)")
    p.add_argument("--out", default=None, help="table2: also write one JSON line per cell here")
    args = p.parse_args()
    if args.table2:
        args.classes, args.seeds = args.classes or 6, args.seeds or 1
        table2(args)
    elif args.pack:
        args.classes, args.seeds = args.classes or 7, args.seeds or 1
        pack(args)
    else:
        args.classes, args.seeds = args.classes or 7, args.seeds or 2
        compare(args)


if __name__ == "__main__":
    main()
