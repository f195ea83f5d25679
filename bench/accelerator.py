"""Every figure the trainer's accelerator work asks for, printed by one run on one device.

On a GPU (one call each, ~9 minutes at most; the first compiles into a fresh persistent cache):

    python bench/accelerator.py            # (a) (b) (c), Sinkhorn iterations/errors, PyTorch reference
    python bench/accelerator.py --grid     # (d) the whole paper grid on random features, per corpus

Needs jax with the accelerator's plugin (e.g. jax[cuda12]) and, for the PyTorch reference, a CUDA torch
(else `--skip torch`). Every figure is printed as soon as it is measured (a run cut short keeps them);
the last line is all of them as JSON. If the first call runs long, `--skip fixed` (then `--skip torch`)
keeps it within one call; the SVM cells of (d) run on the host CPU (scikit-learn): their time is printed
apart, and `--skip-methods svm` leaves them out.

On CPU, the same code end to end at tiny sizes (the script's own check; the figures mean nothing):

    python bench/accelerator.py --tiny
    python bench/accelerator.py --tiny --grid

(a) Emo-DB size (535 x (3840, 768), 7 classes), 5 folds x 50 epochs, no early stopping: wall time of
    the first call (compilation included; seconds spent in XLA's backend compile reported apart), the
    steady time (the same call again), and the wall time of the same call in a second process that
    finds the persistent compilation cache the first one filled.
(b) CREMA-D size (7442 rows, 6 classes), 5 folds x 5 epochs: wall and steady.
(c) Emo-DB size with 10 seeds (50 members in one program), 50 epochs: steady time and its share of the
    float32 matmul peak measured in the same run (jit, 2048^3, JAX's default precision).
Sinkhorn: on the training batches of (a)'s trained members (and of their initial params), the
    iterations ott-jax's Sinkhorn takes to reach the default threshold and its final marginal error,
    and the marginal error after fixed iteration counts; then the (a) cell timed with a fixed count.
PyTorch: bench/torch_reference.py on the same device, (a) and (b) sizes, fold after fold.
(d) Table 1 (8 encoders' dims x SVM/FCN/CNN) and Table 2 (the paper's 25 pairs x Concat/PARROT) on random
    features of Emo-DB (535 x 7), CREMA-D (7442 x 6) and MESD (864 x 6) sizes, 5 folds, at most 50 epochs
    with early stopping, one seed; cells of equal shapes packed into one program (training.pack_size).
    Wall time per corpus and in all.

Results are the trainer's defaults for the backend (TrainConfig.loop "auto": "cell" on an accelerator).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import monitoring

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_folds import matmul_peak, train_flops_per_row  # noqa: E402

from parrot_jax.models import CNNBranch, ModelConfig, build_model  # noqa: E402
from parrot_jax.ot import SinkhornOptions, normalized_cost  # noqa: E402
from parrot_jax.splits import make_folds  # noqa: E402
from parrot_jax.compilation_cache import enable_compilation_cache  # noqa: E402
from parrot_jax.training import TrainConfig, train_cell  # noqa: E402

FULL = {"dims": (3840, 768), "emodb": (535, 7), "cremad": (7442, 6), "mesd": (864, 6), "epochs": 50, "cremad_epochs": 5}
TINY = {"dims": (96, 48), "emodb": (120, 7), "cremad": (300, 6), "mesd": (140, 6), "epochs": 3, "cremad_epochs": 2}

_compile_seconds = [0.0]
_per_program: dict[str, float] = {}


def _on_duration(event: str, seconds: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _compile_seconds[0] += seconds
        name = str(kwargs.get("fun_name", "?"))
        _per_program[name] = _per_program.get(name, 0.0) + seconds


def random_cell(rows: int, classes: int, dims, seed: int = 0):
    rng = np.random.default_rng(seed)
    features = [rng.normal(size=(rows, d)).astype(np.float32) for d in dims]
    labels = rng.permutation(np.arange(rows) % classes)
    return features, labels, make_folds(labels, k=5, seed=0)


def timed_cell(kind, cfg, features, labels, folds, config):
    """(seconds, seconds of XLA backend compile within them, result)."""
    before = _compile_seconds[0]
    start = time.perf_counter()
    result = train_cell(kind, cfg, features, labels, folds, config)
    jax.block_until_ready(result.params)
    return time.perf_counter() - start, _compile_seconds[0] - before, result


def cell_flops(cfg: ModelConfig, dims, folds, epochs: int, seeds: int) -> float:
    rows = sum(-(-len(f.train) // 32) * 32 for f in folds) * epochs * seeds
    return train_flops_per_row(cfg, dims) * rows


def part_a(sizes, out: dict, steady_too: bool = True) -> tuple:
    rows, classes = sizes["emodb"]
    features, labels, folds = random_cell(rows, classes, sizes["dims"])
    cfg = ModelConfig(num_classes=classes)
    config = TrainConfig(epochs=sizes["epochs"], patience=None, loop=sizes["loop"])
    _per_program.clear()
    wall, compile_s, _ = timed_cell("parrot", cfg, features, labels, folds, config)
    programs = dict(sorted(_per_program.items(), key=lambda item: -item[1]))
    steady, result = float("nan"), None
    if steady_too:
        steady, _, result = timed_cell("parrot", cfg, features, labels, folds, config)
    out["a"] = {"wall_first_s": wall, "backend_compile_s": compile_s, "steady_s": steady, "compile_by_program_s": programs}
    print("(a) XLA compile by program: " + ", ".join(f"{name} {sec:.1f} s" for name, sec in list(programs.items())[:6]))
    print(f"(a) Emo-DB 5 folds x {config.epochs} epochs: first call {wall:.1f} s (XLA compile {compile_s:.1f} s), "
          f"steady {steady:.2f} s", flush=True)
    return features, labels, folds, cfg, result


def second_process(args, cache: str, out: dict) -> None:
    cmd = [sys.executable, __file__, "--only-a", "--cache", cache, "--loop", args.loop] + (["--tiny"] if args.tiny else [])
    cmd += ["--epochs", str(args.epochs)] if args.epochs is not None else []
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    record = json.loads(done.stdout.strip().splitlines()[-1])["a"]
    out["a"]["second_process_wall_s"] = record["wall_first_s"]
    out["a"]["second_process_compile_s"] = record["backend_compile_s"]
    print(f"(a) second process, persistent cache: first call {record['wall_first_s']:.1f} s "
          f"(XLA compile {record['backend_compile_s']:.1f} s)", flush=True)


def part_b(sizes, out: dict) -> None:
    rows, classes = sizes["cremad"]
    features, labels, folds = random_cell(rows, classes, sizes["dims"])
    config = TrainConfig(epochs=sizes["cremad_epochs"], patience=None, loop=sizes["loop"])
    cfg = ModelConfig(num_classes=classes)
    wall, compile_s, _ = timed_cell("parrot", cfg, features, labels, folds, config)
    steady, _, _ = timed_cell("parrot", cfg, features, labels, folds, config)
    out["b"] = {"wall_first_s": wall, "backend_compile_s": compile_s, "steady_s": steady}
    print(f"(b) CREMA-D 5 folds x {config.epochs} epochs: first call {wall:.1f} s (XLA compile {compile_s:.1f} s), "
          f"steady {steady:.2f} s", flush=True)


def part_c(sizes, peak_gflops: float, out: dict) -> None:
    rows, classes = sizes["emodb"]
    features, labels, folds = random_cell(rows, classes, sizes["dims"])
    cfg = ModelConfig(num_classes=classes)
    config = TrainConfig(epochs=sizes["epochs"], patience=None, seeds=tuple(range(10)), loop=sizes["loop"])
    wall, compile_s, _ = timed_cell("parrot", cfg, features, labels, folds, config)
    steady, _, _ = timed_cell("parrot", cfg, features, labels, folds, config)
    flops = cell_flops(cfg, sizes["dims"], folds, config.epochs, 10)
    share = 100 * flops / steady / 1e9 / peak_gflops
    out["c"] = {"wall_first_s": wall, "steady_s": steady, "tflop": flops / 1e12, "percent_of_peak": share}
    print(f"(c) Emo-DB 10 seeds x 5 folds = 50 members x {config.epochs} epochs: first call {wall:.1f} s, steady "
          f"{steady:.2f} s, {flops / 1e12:.2f} TFLOP -> {share:.1f}% of the {peak_gflops / 1e3:.1f} TFLOP/s peak", flush=True)


def sinkhorn_report(features, labels, folds, cfg: ModelConfig, trained, sizes, out: dict) -> None:
    """Iterations to the threshold and marginal errors on real training batches of the (a) members."""
    from ott.geometry import geometry
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn

    branch = CNNBranch(cfg)
    options = cfg.sinkhorn

    def solve(params_p, params_q, x_p, x_q, fixed):
        r_p = branch.apply({"params": params_p}, x_p)
        r_q = branch.apply({"params": params_q}, x_q)
        geom = geometry.Geometry(normalized_cost(r_p, r_q), epsilon=options.epsilon)
        weights = jnp.full(x_p.shape[0], 1.0 / x_p.shape[0])
        problem = linear_problem.LinearProblem(geom, weights, weights)
        converged = sinkhorn.Sinkhorn(threshold=options.threshold, max_iterations=options.max_iterations,
                                      inner_iterations=1)(problem)
        errors = []
        for n in fixed:
            plan = sinkhorn.Sinkhorn(threshold=0.0, max_iterations=n, min_iterations=n, inner_iterations=1)(problem).matrix
            errors.append(jnp.abs(plan.sum(1) - weights).sum() + jnp.abs(plan.sum(0) - weights).sum())
        plan = converged.matrix
        error = jnp.abs(plan.sum(1) - weights).sum() + jnp.abs(plan.sum(0) - weights).sum()
        return converged.n_iters, error, jnp.stack(errors)

    fixed = (10, 20, 50, 100, 200)
    solve = jax.jit(solve, static_argnums=(4,))
    report = {}
    for label, which in (("trained", "trained"), ("initial", "initial")):
        iters, errs, fixed_errs = [], [], []
        for m, run in enumerate(trained.runs):
            params, stats = trained.member(run.seed, run.fold)
            if which == "initial":
                dummy = tuple(jnp.zeros((2, d)) for d in sizes["dims"])
                params = build_model("parrot", cfg).init(jax.random.PRNGKey(m), dummy)["params"]
            xs = stats.apply(features)
            train = folds[run.fold].train
            order = np.random.default_rng(m).permutation(train)
            for start in range(0, len(order) - 31, 32)[:20]:
                rows = order[start:start + 32]
                n, e, fe = solve(params["branch_p"], params["branch_q"], xs[0][rows], xs[1][rows], fixed)
                iters.append(int(n)), errs.append(float(e)), fixed_errs.append(np.asarray(fe))
        fixed_errs = np.stack(fixed_errs)
        report[label] = {
            "batches": len(iters),
            "iterations": {"min": min(iters), "median": float(np.median(iters)), "max": max(iters)},
            "converged_marginal_error_max": max(errs),
            "fixed_marginal_error_max": {str(n): float(fixed_errs[:, i].max()) for i, n in enumerate(fixed)},
        }
        print(f"Sinkhorn ({label} params, {len(iters)} batches of 32, epsilon {options.epsilon}, threshold "
              f"{options.threshold}): iterations min/median/max {min(iters)}/{np.median(iters):.0f}/{max(iters)}, "
              f"marginal error at stop <= {max(errs):.2e}; after fixed counts (max over batches) "
              + ", ".join(f"{n}: {fixed_errs[:, i].max():.2e}" for i, n in enumerate(fixed)), flush=True)
    out["sinkhorn"] = report


def sinkhorn_fixed_timing(features, labels, folds, sizes, iterations: int, out: dict) -> None:
    rows, classes = sizes["emodb"]
    cfg = ModelConfig(num_classes=classes, sinkhorn=SinkhornOptions(threshold=None, max_iterations=iterations))
    config = TrainConfig(epochs=sizes["epochs"], patience=None, loop=sizes["loop"])
    wall, compile_s, _ = timed_cell("parrot", cfg, features, labels, folds, config)
    steady, _, _ = timed_cell("parrot", cfg, features, labels, folds, config)
    out["a_fixed_sinkhorn"] = {"iterations": iterations, "wall_first_s": wall, "backend_compile_s": compile_s, "steady_s": steady}
    print(f"(a) with Sinkhorn fixed at {iterations} iterations: first call {wall:.1f} s (XLA compile {compile_s:.1f} s), "
          f"steady {steady:.2f} s", flush=True)


def torch_part(sizes, out: dict) -> None:
    import torch
    import torch_reference

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out["torch"] = {"device": device}
    for name, epochs in (("emodb", sizes["epochs"]), ("cremad", sizes["cremad_epochs"])):
        rows, classes = sizes[name]
        features, labels, folds = random_cell(rows, classes, sizes["dims"])
        start = time.perf_counter()
        torch_reference.train_folds(features, labels, folds, ModelConfig(num_classes=classes), epochs, device=device)
        seconds = time.perf_counter() - start
        out["torch"][name] = seconds
        print(f"PyTorch eager on {device}, {name} 5 folds x {epochs} epochs: {seconds:.1f} s", flush=True)


def grid_part(sizes, args, out: dict) -> None:
    from parrot_jax.encoders import registry
    from parrot_jax.grid import TABLE1_METHODS, TABLE2_METHODS, pairs_for
    from parrot_jax.svm import svm_cell
    from parrot_jax.training import pack_size, train_cells

    names = [n for n, e in registry.ENCODERS.items() if e.family in ("mamba", "attention")]
    dims = {n: (registry.ENCODERS[n].dim if not args.tiny else 16 * (1 + i % 3) + 48) for i, n in enumerate(names)}
    pairs, _ = pairs_for(names)
    config = TrainConfig(epochs=sizes["epochs"], loop=sizes["loop"])
    total_start = time.perf_counter()
    out["grid"] = {}
    for corpus in args.corpora.split(","):
        rows, classes = sizes[corpus]
        rng = np.random.default_rng(0)
        features = {n: rng.normal(size=(rows, d)).astype(np.float32) for n, d in dims.items()}
        labels = rng.permutation(np.arange(rows) % classes)
        folds = make_folds(labels, k=5, seed=0)
        cfg = ModelConfig(num_classes=classes)
        groups: dict[tuple, list[list[np.ndarray]]] = {}
        for n in names:
            for method in TABLE1_METHODS:
                groups.setdefault((method, (dims[n],)), []).append([features[n]])
        for a, b in pairs:
            for method in TABLE2_METHODS:
                groups.setdefault((method, (dims[a], dims[b])), []).append([features[a], features[b]])
        start, cells, programs, by_method = time.perf_counter(), 0, 0, {}
        for (method, shape), cell_features in groups.items():
            if method in args.skip_methods:
                continue
            began = time.perf_counter()
            if method == "svm":
                for f in cell_features:
                    svm_cell(f, labels, folds)
                cells += len(cell_features)
                by_method[method] = by_method.get(method, 0.0) + time.perf_counter() - began
                continue
            limit = pack_size(method, cfg, [(rows, d) for d in shape], len(folds) * len(config.seeds), config)
            for i in range(0, len(cell_features), limit):
                train_cells(method, cfg, cell_features[i:i + limit], labels, folds, config)
                programs += 1
            cells += len(cell_features)
            by_method[method] = by_method.get(method, 0.0) + time.perf_counter() - began
        seconds = time.perf_counter() - start
        out["grid"][corpus] = {"cells": cells, "programs": programs, "seconds": seconds, "by_method_s": by_method}
        print(f"(d) {corpus}: {cells} cells ({programs} trainer programs) in {seconds:.1f} s; by method "
              + ", ".join(f"{m} {t:.1f} s" for m, t in by_method.items()), flush=True)
    total = time.perf_counter() - total_start
    out["grid"]["total_s"] = total
    print(f"(d) whole paper grid, three corpora: {total:.1f} s wall", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: check the script end to end on CPU")
    ap.add_argument("--grid", action="store_true", help="(d) only: the whole paper grid")
    ap.add_argument("--cache", default=None, help="persistent compilation cache folder (default: a fresh one)")
    ap.add_argument("--skip", default="", help="comma list of parts to leave out: second,b,c,sinkhorn,fixed,torch")
    ap.add_argument("--corpora", default="emodb,cremad,mesd", help="--grid: the corpora's sizes to run")
    ap.add_argument("--skip-methods", default="", help="--grid: comma list of methods to leave out (e.g. svm)")
    ap.add_argument("--fixed-iterations", type=int, default=50, help="Sinkhorn count for the fixed-count timing")
    ap.add_argument("--loop", default="auto", help="TrainConfig.loop of every cell (default: the backend's)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of (a), (c) and (d) (default 50; tiny 3)")
    ap.add_argument("--only-a", action="store_true", help=argparse.SUPPRESS)  # the second process of (a)
    args = ap.parse_args()
    sizes = dict(TINY if args.tiny else FULL, loop=args.loop)
    if args.epochs is not None:
        sizes["epochs"] = args.epochs
    skip = set(filter(None, args.skip.split(",")))
    args.skip_methods = set(filter(None, args.skip_methods.split(",")))
    cache = args.cache or tempfile.mkdtemp(prefix="parrot-jax-cache-")
    enable_compilation_cache(cache)
    monitoring.register_event_duration_secs_listener(_on_duration)
    out: dict = {"backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind), "cache": cache}
    if args.only_a:
        part_a(sizes, out, steady_too=False)
        print(json.dumps(out))
        return
    print(f"jax {jax.__version__}, {out['backend']} {out['device']}, persistent cache {cache}, "
          f"loop {TrainConfig(loop=args.loop).loop_form()}", flush=True)
    start = time.perf_counter()
    if args.grid:
        grid_part(sizes, args, out)
    else:
        peak = matmul_peak()
        out["matmul_peak_gflops"] = peak
        print(f"float32 matmul peak (2048^3, jit): {peak / 1e3:.1f} TFLOP/s", flush=True)
        features, labels, folds, cfg, trained = part_a(sizes, out)
        if "second" not in skip:
            second_process(args, cache, out)
        if "b" not in skip:
            part_b(sizes, out)
        if "c" not in skip:
            part_c(sizes, peak, out)
        if "sinkhorn" not in skip:
            sinkhorn_report(features, labels, folds, cfg, trained, sizes, out)
        if "fixed" not in skip:
            sinkhorn_fixed_timing(features, labels, folds, sizes, args.fixed_iterations, out)
        if "torch" not in skip:
            torch_part(sizes, out)
            for name, part in (("emodb", "a"), ("cremad", "b")):
                if part in out:
                    print(f"steady speed-up over PyTorch, {name}: x{out['torch'][name] / out[part]['steady_s']:.1f}; "
                          f"wall incl. compile x{out['torch'][name] / out[part]['wall_first_s']:.1f}")
    print(f"total {time.perf_counter() - start:.1f} s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
