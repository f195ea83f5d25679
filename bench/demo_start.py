"""`parrot demo` from a cold start and on a warm compilation cache, timed in one run.

Three `parrot demo` processes, one after another, each into its own empty folder:

1. cold: an empty JAX compilation cache (a fresh ``XDG_CACHE_HOME``), as on a fresh machine;
2. warm: the same cache, which the cold run filled;
3. uncached: ``--no-compilation-cache`` on the same machine, what every run cost before the demo used the
   cache (the reference the warm run is compared with).

Prints each run's wall time, its XLA compile seconds and persistent-cache hits and misses (jax.monitoring),
and whether the three printed the same tables (the demo is deterministic). The issue's targets on 2 quiet
cores: cold <= 90 s, warm <= 45 s.

    .venv/bin/python bench/demo_start.py
    .venv/bin/python bench/demo_start.py --epochs 3      # a quick check of the script itself
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs in the child: the demo through the `parrot` entry point, with compile time and cache events counted.
CHILD = """
import json, sys
from jax import monitoring
counts = {"compile_seconds": 0.0, "hits": 0, "misses": 0}
def duration(event, seconds, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        counts["compile_seconds"] += seconds
def happened(event, **kwargs):
    for name in ("hits", "misses"):
        if event == "/jax/compilation_cache/cache_" + name:
            counts[name] += 1
monitoring.register_event_duration_secs_listener(duration)
monitoring.register_event_listener(happened)
from parrot_jax.cli import main
code = main(sys.argv[1:])
print("DEMO-COUNTS " + json.dumps(counts))
sys.exit(code)
"""


def run_demo(out: Path, cache_home: Path, epochs: int | None, cached: bool) -> dict:
    """One `parrot demo` process into ``out``: wall seconds, compile seconds, cache hits/misses, its tables."""
    argv = ([] if cached else ["--no-compilation-cache"]) + ["demo", "--out", str(out)]
    argv += ["--epochs", str(epochs)] if epochs is not None else []
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"parrot demo failed ({done.returncode}):\n{done.stderr[-3000:]}")
    lines = done.stdout.splitlines()
    counts = json.loads(next(line for line in lines if line.startswith("DEMO-COUNTS "))[len("DEMO-COUNTS "):])
    tables = [line for line in lines if line.startswith("|")]
    return {"wall": wall, **counts, "tables": tables}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=None, help="the demo's --epochs (default: its own, 30)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        root, cache_home = Path(tmp), Path(tmp) / "cache-home"
        runs = {}
        for name, cached in (("cold", True), ("warm", True), ("uncached", False)):
            runs[name] = run_demo(root / name, cache_home, args.epochs, cached)
            r = runs[name]
            print(f"{name:9s}: {r['wall']:6.1f} s wall, XLA compile {r['compile_seconds']:5.1f} s, "
                  f"persistent cache {r['hits']} hits / {r['misses']} misses", flush=True)
    same = runs["cold"]["tables"] == runs["warm"]["tables"] == runs["uncached"]["tables"]
    print(f"warm vs uncached: x{runs['uncached']['wall'] / runs['warm']['wall']:.2f}; "
          f"cold vs uncached: x{runs['uncached']['wall'] / runs['cold']['wall']:.2f}")
    print(f"tables identical in the three runs: {same} ({len(runs['cold']['tables'])} table lines)")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        print(json.dumps({name: {k: v for k, v in r.items() if k != "tables"} for name, r in runs.items()}))


if __name__ == "__main__":
    main()
