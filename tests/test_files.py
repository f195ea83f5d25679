"""parrot_jax.files: an atomic write that fails names its file; temporaries of killed writers are removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from parrot_jax.files import remove_dead_temporaries

REPO = Path(__file__).resolve().parents[1]


def test_a_write_the_disk_refuses_names_the_file(tmp_path):
    """A full disk says "[Errno 28] No space left on device" without a file name; a file-size limit refuses the
    write the same way (errno 27, no file name), which a test can cause: the error must name the file."""
    script = (
        "import resource, signal, sys\n"
        "from parrot_jax.files import atomic_write\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        "    atomic_write(sys.argv[1], lambda f: f.write(bytes(1 << 20)))\n"
        "except OSError as error:\n"
        "    print(error)\n"
    )
    target = tmp_path / "out" / "big.bin"
    done = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.stdout == f"[Errno 27] writing {target}: File too large\n", done.stdout + done.stderr
    assert not target.exists() and not list(target.parent.iterdir())  # no temporary left behind


def test_only_temporaries_of_ended_processes_are_removed(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    target = tmp_path / "model"
    dead = [tmp_path / f".model.tmp-{ended.pid}", tmp_path / f".model.tmp-old-{ended.pid}"]
    dead[0].mkdir()
    (dead[0] / "state").mkdir()
    dead[1].write_bytes(b"partial")
    alive = tmp_path / f".model.tmp-{os.getpid()}"
    alive.mkdir()
    other = tmp_path / f".other.tmp-{ended.pid}"
    other.mkdir()
    remove_dead_temporaries(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])
