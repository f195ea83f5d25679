"""parrot_jax.locks: one holder at a time, refusals naming the folder and the holder, release on any exit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from parrot_jax.locks import Locked, exclusive

HOLD = "from parrot_jax.locks import exclusive; import sys, time\nwith exclusive(sys.argv[1], 'store'):\n" \
       "    print('held', flush=True); time.sleep(60)"


def _holder(folder: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    assert process.stdout.readline() == "held\n"
    return process


def test_a_second_holder_is_refused_naming_folder_and_holder(tmp_path):
    process = _holder(tmp_path / "store")
    try:
        message = (rf"store {tmp_path / 'store'} is in use by process {process.pid} on "
                   rf"{socket.gethostname()} since .*: wait for it to finish \(or stop it\) and run again")
        with pytest.raises(Locked, match=message):
            with exclusive(tmp_path / "store", "store"):
                pass
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    with exclusive(tmp_path / "store", "store"):  # a killed holder leaves no stale lock
        refused = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path / "store")], capture_output=True,
                                 text=True, env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])),
                                 timeout=60)
    assert refused.returncode == 1 and f"is in use by process {os.getpid()} on" in refused.stderr
    with exclusive(tmp_path / "store", "store"):  # released when the block ends
        pass
