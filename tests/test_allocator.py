"""parrot_jax.allocator: the environment switch, and the property the settings exist for: a jitted program
with large temporaries stops page-faulting its memory afresh on every call (counted by the kernel in a
fresh subprocess, with and without the settings); and that importing the library leaves malloc alone."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from parrot_jax import allocator

PROBE = """
import resource, json, sys
import parrot_jax.models  # what a researcher imports: must change nothing
if sys.argv[1] == "opt-in":
    from parrot_jax import allocator
    allocator.keep_freed_memory_if_wanted()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sum(jnp.sort(x * 2.0) + jnp.cumsum(x)))  # temporaries of 64 MB each
x = jnp.ones((16 << 20,), jnp.float32)
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    f(x).block_until_ready()
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5))
"""


def _faults_per_call(setting: str, opt_in: bool = True) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env[allocator.ENV_VAR] = setting
    argv = [sys.executable, "-c", PROBE, "opt-in" if opt_in else "import-only"]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_wanted_reads_the_environment():
    assert allocator.wanted({}) and allocator.wanted({allocator.ENV_VAR: "1"})
    assert not allocator.wanted({allocator.ENV_VAR: "0"})
    with pytest.raises(ValueError, match="PARROT_KEEP_FREED_MEMORY must be 0 or 1, got 'yes'"):
        allocator.wanted({allocator.ENV_VAR: "yes"})


@pytest.mark.slow
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc malloc's (Linux)")
def test_settings_stop_refaulting():
    assert allocator.keep_freed_memory()
    default, kept = _faults_per_call("0"), _faults_per_call("1")
    if default < 5000:
        pytest.skip(f"this machine's malloc does not re-fault large blocks ({default:.0f} faults per call by default)")
    # By default each call faults its temporaries in afresh (~117 000 faults here); kept, a few thousand
    # remain (the host's proactive reclaim takes back some idle pages: 7 000-21 000 seen)
    assert kept < 0.3 * default, (kept, default)


@pytest.mark.slow
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc malloc's (Linux)")
def test_import_changes_nothing():
    """`import parrot_jax.models` with the switch on but no opt-in call: glibc's default re-faulting remains."""
    default, imported = _faults_per_call("0"), _faults_per_call("1", opt_in=False)
    if default < 5000:
        pytest.skip(f"this machine's malloc does not re-fault large blocks ({default:.0f} faults per call by default)")
    assert imported > 0.5 * default, (imported, default)
