"""One PARROT cell, k folds x E epochs, timed in one run: the JAX trainer's default (``fold_axis="auto"``,
with what it resolved to), its vmapped program, the same folds one after another in JAX, and a plain
PyTorch implementation of the same model trained fold after fold. Random features of Emo-DB's size
(535 x (3840, 768), 7 classes), of CREMA-D's size (7442 rows, 6 classes), of Emo-DB's rows with two base-size
encoders ("base": 535 x (768, 768); "large": 1536 each) and of the demo's (192 x (160, 128), 4 classes:
`parrot demo`'s MFCC and log-mel statistics). Prints seconds, ratios, and achieved GFLOP/s
against this machine's float32 matmul peak (measured in the same run).

    .venv/bin/python bench/train_folds.py                           # the full benchmark
    .venv/bin/python bench/train_folds.py --epochs 2 --folds 2 --datasets emodb   # quick iteration
    .venv/bin/python bench/train_folds.py --datasets emodb,demo --epochs 3 --demo-epochs 30 \\
        --ways default,vmap,loop                                    # the fold_axis default (README "Defaults")

All three train the same number of steps: early stopping is off (patience None), every epoch runs, and
each epoch ends with a validation pass, as in the trainer. torch is imported only here. Importing parrot_jax
sets glibc's malloc to keep freed memory (parrot_jax/allocator.py); PyTorch in this process gains from it
too. The way "torch-default-malloc" runs the same PyTorch reference in a child process without it
(PARROT_KEEP_FREED_MEMORY=0), as a PyTorch user would run it.

The arithmetic floor printed is the training FLOPs at the measured matmul peak: no implementation of the
same float32 arithmetic on this machine can be faster than that.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

from parrot_jax import allocator

allocator.keep_freed_memory_if_wanted()  # before JAX allocates anything (PARROT_KEEP_FREED_MEMORY=0: off)

import jax
import jax.numpy as jnp
import numpy as np

from parrot_jax.models import ModelConfig
from parrot_jax.splits import Fold, make_folds
from parrot_jax.training import TrainConfig, train_cell

DIMS = (3840, 768)
DATASETS = {"emodb": (535, 7, DIMS), "cremad": (7442, 6, DIMS), "demo": (192, 4, (160, 128)),
            "base": (535, 7, (768, 768)),  # Emo-DB rows, two base-size encoders (768 each)
            "large": (535, 7, (1536, 1536))}  # Emo-DB rows, 1536 each (PARROT 11.8 M parameters)


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """float32 GFLOP/s of a jitted n x n x n matmul (best of ``repeats``)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _out_len(length: int, kernel: int, padding: str) -> int:
    return length if padding.lower() == "same" else length - kernel + 1


def train_flops_per_row(cfg: ModelConfig, dims=DIMS) -> float:
    """Forward multiply-adds x 2 of one row through PARROT's convolutions and dense layers, x 3 for a
    training step (forward + two backward products). The OT branch's B x B work is left out (small)."""
    fwd = 0.0
    for d in dims:
        length, channels = d, 1
        for f in cfg.filters:
            length = _out_len(length, cfg.kernel_size, cfg.conv_padding)
            fwd += 2 * length * cfg.kernel_size * channels * f
            length, channels = length // cfg.pool_size, f
        fwd += 2 * length * channels * cfg.latent_dim
    fwd += 2 * 5 * cfg.latent_dim * cfg.hidden + 2 * cfg.hidden * cfg.num_classes
    return 3 * fwd


def _trim(folds: list[Fold], rows: int) -> list[Fold]:
    return [Fold(f.train[:rows], f.val[:rows], f.test[:rows]) for f in folds]


def run_jax(features, labels, folds, cfg, epochs, fold_axis, loop) -> tuple[float, float, str]:
    """(seconds of a small warm-up run that compiles, seconds of the timed run, the fold axis it ran);
    ``fold_axis`` "auto" is the trainer's default."""
    config = TrainConfig(epochs=epochs, patience=None, fold_axis=fold_axis, loop=loop)
    warm = _timed(lambda: train_cell("parrot", cfg, features, labels, _trim(folds, 64), TrainConfig(
        epochs=1, patience=None, fold_axis=fold_axis, loop=loop)))
    start = time.perf_counter()
    cell = train_cell("parrot", cfg, features, labels, folds, config)
    return warm, time.perf_counter() - start, cell.config["ran"]["fold_axis"]


def run_torch(features, labels, folds, cfg, epochs) -> float:
    import torch_reference

    return _timed(lambda: torch_reference.train_folds(features, labels, folds, cfg, epochs))


def run_torch_default_malloc(args, name: str, epochs: int) -> float:
    """The PyTorch reference in a child process with glibc's default malloc settings."""
    env = dict(os.environ, PARROT_KEEP_FREED_MEMORY="0")
    cmd = [sys.executable, __file__, "--datasets", name, "--folds", str(args.folds), "--ways", "torch", "--json"]
    flag = {"emodb": "--epochs", "cremad": "--cremad-epochs", "demo": "--demo-epochs"}.get(name, "--base-epochs")
    cmd += [flag, str(epochs)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])[name]["torch"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="emodb,cremad")
    ap.add_argument("--folds", type=int, default=5, help="train the first N of the 5 folds")
    ap.add_argument("--epochs", type=int, default=50, help="epochs for Emo-DB size")
    ap.add_argument("--cremad-epochs", type=int, default=2, help="epochs for CREMA-D size")
    ap.add_argument("--demo-epochs", type=int, default=30, help="epochs for the demo's size (the demo trains 30)")
    ap.add_argument("--base-epochs", type=int, default=10, help="epochs for the base and large sizes (Emo-DB rows, "
                    "768 + 768 and 1536 + 1536)")
    ap.add_argument("--ways", default="default,vmap,loop,torch,torch-default-malloc")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the seconds")
    ap.add_argument("--loop", default="auto", help="TrainConfig.loop for the JAX runs")
    args = ap.parse_args()
    ways = args.ways.split(",")

    print(f"jax {jax.__version__} backend {jax.default_backend()} devices {jax.devices()}")
    peak = matmul_peak()
    print(f"float32 matmul peak (2048^3, jit): {peak:.0f} GFLOP/s")
    cfg_kwargs = {}
    record = {}
    for name in args.datasets.split(","):
        n, classes, dims = DATASETS[name]
        epochs = {"emodb": args.epochs, "cremad": args.cremad_epochs, "demo": args.demo_epochs,
                  "base": args.base_epochs, "large": args.base_epochs}[name]
        rng = np.random.default_rng(0)
        features = [rng.normal(size=(n, d)).astype(np.float32) for d in dims]
        labels = rng.permutation(np.arange(n) % classes)
        folds = make_folds(labels, k=5, seed=0)[: args.folds]
        cfg = ModelConfig(num_classes=classes, **cfg_kwargs)
        rows = sum(math.ceil(len(f.train) / 32) * 32 for f in folds) * epochs  # padded rows actually computed
        flops = train_flops_per_row(cfg, dims) * rows
        print(f"\n== {name}: {n} rows x {dims}, {classes} classes, {len(folds)} folds x {epochs} epochs, "
              f"train rows per fold {[len(f.train) for f in folds]}, ~{flops / 1e12:.2f} TFLOP of training")
        times = {}
        for way in ways:
            if way == "torch":
                times[way] = run_torch(features, labels, folds, cfg, epochs)
                print(f"torch (fold after fold)     : {times[way]:8.1f} s")
            elif way == "torch-default-malloc":
                times[way] = run_torch_default_malloc(args, name, epochs)
                print(f"torch, glibc malloc default : {times[way]:8.1f} s")
            else:
                axis = {"default": "auto", "vmap": "vmap", "loop": "loop"}[way]
                warm, times[way], ran = run_jax(features, labels, folds, cfg, epochs, axis, args.loop)
                shown = f"default (fold_axis auto -> {ran})" if way == "default" else way
                print(f"jax {shown:34s} (warm-up {warm:6.1f} s): {times[way]:8.1f} s")
        for way, t in times.items():
            print(f"  {way:7s}: {t:8.1f} s  {flops / t / 1e9:7.1f} GFLOP/s = "
                  f"{100 * flops / t / 1e9 / peak:5.1f}% of peak"
                  + "".join(f"  x{times[o] / t:.2f} vs {o}" for o in times if o != way))
        floor = flops / peak / 1e9
        print(f"  arithmetic floor at the measured peak: {floor:.1f} s", end="")
        if "torch" in times:
            print(f"; 3x the PyTorch reference means {times['torch'] / 3:.1f} s = "
                  f"{100 * floor / (times['torch'] / 3):.0f}% of peak", end="")
        print()
        record[name] = times
    if args.json:
        print(json.dumps(record))


if __name__ == "__main__":
    main()
