"""Where the CPU trainer's time goes, each part timed against its alternative in one run:

1. allocator: one PARROT fold (Emo-DB size, 3840 + 768) trained by `train_cell`, seconds per epoch and
   page faults per epoch, in this process (parrot_jax keeps freed memory, parrot_jax/allocator.py) and
   in a child process with PARROT_KEEP_FREED_MEMORY=0 (glibc's default malloc).
2. conv rule: the gradient of a 3840-dim CNN branch for 5 members under vmap, with the member-loop
   rule and with JAX's grouped convolution (parrot_jax/conv.py), and for one member alone.
3. Sinkhorn under vmap: 5 folds trained vmapped and as a loop of folds, seconds per fold-epoch, with the
   default Sinkhorn (run to threshold 1e-3) and with exactly 10 iterations.

    .venv/bin/python bench/train_step.py [--parts allocator,conv,sinkhorn] [--epochs 3]

Epoch times leave out the first epoch (compilation); an epoch includes its validation pass. Needs no torch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from parrot_jax import allocator

allocator.keep_freed_memory_if_wanted()  # before JAX allocates anything (PARROT_KEEP_FREED_MEMORY=0: off)

import jax
import jax.numpy as jnp
import numpy as np

from parrot_jax.conv import conv1d, matmul_conv1d
from parrot_jax.models import ModelConfig
from parrot_jax.ot import SinkhornOptions
from parrot_jax.splits import make_folds
from parrot_jax.training import TrainConfig, train_cell

DIMS, ROWS, CLASSES = (3840, 768), 535, 7


def _data(folds: int):
    rng = np.random.default_rng(0)
    features = [rng.normal(size=(ROWS, d)).astype(np.float32) for d in DIMS]
    labels = rng.permutation(np.arange(ROWS) % CLASSES)
    return features, labels, make_folds(labels, k=5, seed=0)[:folds]


def epoch_seconds(folds: int, epochs: int, fold_axis: str, sinkhorn: SinkhornOptions) -> tuple[float, float]:
    """(median seconds, mean minor page faults) per fold-epoch of `train_cell`, the first epoch left out.

    The progress callback marks each epoch: of all folds at once when vmapped (divided by the number of
    folds here), of one fold at a time in a loop of folds."""
    features, labels, fold_list = _data(folds)
    marks: list[tuple[float, int]] = []

    def progress(epoch: int, stats: dict) -> None:
        marks.append((time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt))

    config = TrainConfig(epochs=epochs, patience=None, fold_axis=fold_axis)
    train_cell("parrot", ModelConfig(num_classes=CLASSES, sinkhorn=sinkhorn), features, labels, fold_list, config, progress)
    per = folds if fold_axis == "vmap" else 1
    times = np.diff([t for t, _ in marks]) / per
    faults = np.diff([f for _, f in marks]) / per
    return float(np.median(times)), float(np.mean(faults))


def part_allocator(epochs: int) -> None:
    here = epoch_seconds(1, epochs, "loop", SinkhornOptions())
    code = f"import json, sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import train_step; " \
           f"print(json.dumps(train_step.epoch_seconds(1, {epochs}, 'loop', train_step.SinkhornOptions())))"
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PARROT_KEEP_FREED_MEMORY="0"),
                         capture_output=True, text=True, check=True)
    default = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"allocator, one fold, per epoch: kept memory {here[0]:.2f} s ({here[1]:.0f} page faults), "
          f"glibc default {default[0]:.2f} s ({default[1]:.0f} page faults): x{default[0] / here[0]:.2f}")


def _branch_loss(params, x, rule: str):
    def pool(h):
        n = h.shape[1] // 2
        return jnp.max(h[:, : 2 * n].reshape(h.shape[0], n, 2, h.shape[2]), axis=2)

    conv = (lambda h, w: matmul_conv1d(h, w, "VALID")) if rule == "matmul" else (lambda h, w: conv1d(h, w, "VALID", rule))  # noqa: E731
    h = pool(jax.nn.relu(conv(x[:, :, None], params["w1"]) + params["b1"]))
    h = pool(jax.nn.relu(conv(h, params["w2"]) + params["b2"]))
    return jnp.sum((h.reshape(h.shape[0], -1) @ params["wd"]) ** 2)


def _best_of(fn, *args, repeats: int = 4) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def part_conv(members: int = 5) -> None:
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    length = ((DIMS[0] - 2) // 2 - 2) // 2
    params = {"w1": 0.3 * jax.random.normal(keys[0], (3, 1, 64)), "b1": jnp.full(64, 0.01),
              "w2": 0.05 * jax.random.normal(keys[1], (3, 64, 128)), "b2": jnp.full(128, 0.01),
              "wd": 0.003 * jax.random.normal(keys[2], (length * 128, 120))}
    x = jax.random.normal(keys[3], (32, DIMS[0]))
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a * (1 + 0.1 * m) for m in range(members)]), params)
    xs = jnp.stack([x] * members)
    alone = _best_of(jax.jit(jax.grad(lambda p, x: _branch_loss(p, x, "grouped"))), params, x)
    timed = {rule: _best_of(jax.jit(jax.vmap(jax.grad(lambda p, x, r=rule: _branch_loss(p, x, r)))), stacked, xs)
             for rule in ("loop", "grouped", "matmul")}
    print(f"conv rule, 3840-dim branch gradient, batch 32, {members} members vmapped: loop {1000 * timed['loop']:.0f} ms, "
          f"grouped {1000 * timed['grouped']:.0f} ms (x{timed['grouped'] / timed['loop']:.2f}), "
          f"shifted-view matmul {1000 * timed['matmul']:.0f} ms (x{timed['matmul'] / timed['loop']:.2f}); "
          f"one member alone {1000 * alone:.0f} ms")


def part_sinkhorn(epochs: int) -> None:
    for label, sinkhorn in (("to threshold 1e-3", SinkhornOptions()), ("10 iterations", SinkhornOptions(threshold=None, max_iterations=10))):
        vmap, loop = (epoch_seconds(5, epochs, way, sinkhorn)[0] for way in ("vmap", "loop"))
        print(f"Sinkhorn {label}, 5 folds, per fold-epoch: vmapped {vmap:.2f} s, loop of folds {loop:.2f} s "
              f"(vmapped x{loop / vmap:.2f} the loop's speed)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="allocator,conv,sinkhorn")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per timed training (the first is not counted)")
    args = ap.parse_args()
    print(f"jax {jax.__version__} backend {jax.default_backend()}")
    parts = args.parts.split(",")
    if "allocator" in parts:
        part_allocator(args.epochs)
    if "conv" in parts:
        part_conv()
    if "sinkhorn" in parts:
        part_sinkhorn(args.epochs)


if __name__ == "__main__":
    main()
