"""JAX's persistent compilation cache for the project's programs (encoder runner and trainer alike)."""

from __future__ import annotations

import os
from pathlib import Path

import jax


def enable_compilation_cache(path: str | Path | None = None) -> Path:
    """Send every compiled program of this process to JAX's persistent compilation cache at ``path``
    (default ``$XDG_CACHE_HOME/parrot_jax/jax`` or ``~/.cache/parrot_jax/jax``), unless the user already
    set a folder; returns the folder in use.

    Opt-in: importing the library never calls it; the encoder runner (`parrot_jax.encoders.runner`), the
    grid command and the benchmarks do. A second process with programs of the same shapes loads their executables (on a
    GPU with XLA's tuned convolutions) instead of compiling them. Programs of any compile time are kept
    (JAX's default keeps only those over 1 s), since a cell's small programs (init, evaluation) add up too.
    """
    current = jax.config.jax_compilation_cache_dir
    if current and path is None:
        target = Path(current)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        target = Path(path) if path is not None else base / "parrot_jax" / "jax"
        target.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(target))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return target
