"""Keep freed memory in the process: glibc malloc settings that stop XLA:CPU re-faulting its buffers.

XLA:CPU allocates a program's temporary buffers on every call and frees them after. By default glibc
gives large freed blocks back to the kernel (munmap, heap trimming, per-thread heaps deleted), so the
next call touches fresh pages again: about 1.5 million page faults per epoch of one PARROT fold of
Emo-DB's size on a 2-core CPU (4.18 s an epoch; 2.63 s with these settings; bench/train_step.py).
PyTorch's CPU allocator goes through the same malloc and gains as well.

`keep_freed_memory()` sets, through mallopt(3):
    M_ARENA_MAX = 1              one heap for all threads (threads' own heaps are deleted when empty)
    M_MMAP_MAX = 0               large blocks come from that heap too, not from fresh mappings
    M_TRIM_THRESHOLD = 2^31 - 1  never hand the heap's free top back to the kernel
so the process keeps its peak memory until it exits. Linux with glibc only; a no-op elsewhere.
Opt-in: importing parrot_jax changes nothing. The `parrot` command and the benchmarks call it first
thing unless the environment has PARROT_KEEP_FREED_MEMORY=0; a library user calls it themselves:

    from parrot_jax import allocator
    allocator.keep_freed_memory()   # before anything runs in JAX

The arena limit only holds for threads that have not allocated yet, hence "before anything runs"
(or set MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 in the environment).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

ENV_VAR = "PARROT_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's malloc.h
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))


def keep_freed_memory() -> bool:
    """Apply the settings above; True if glibc accepted all of them, False where there is no glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return all(libc.mallopt(option, value) == 1 for option, value in _SETTINGS)


def wanted(environ: dict[str, str] | None = None) -> bool:
    """Whether the `parrot` command and the benchmarks call keep_freed_memory(): unless PARROT_KEEP_FREED_MEMORY=0."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "1").strip()
    if value not in ("0", "1"):
        raise ValueError(f"{ENV_VAR} must be 0 or 1, got {value!r}")
    return value == "1"


def keep_freed_memory_if_wanted() -> bool:
    """What the `parrot` command and the benchmarks call first: `keep_freed_memory()` unless
    PARROT_KEEP_FREED_MEMORY=0; True if the settings are now in force."""
    return wanted() and keep_freed_memory()
