"""Exclusive locks on folders, so that two processes never write the same store (or results) at once.

`exclusive(folder, what)` holds an advisory ``fcntl.flock`` on ``folder/.lock`` for the block and writes
the holder (process id, host, start time) into that file. A second process asking for the same lock is
refused at once with :class:`Locked`, whose message names the folder and the holder. The kernel releases
the lock when its process ends, however it ends (SIGKILL included), so a lock is never left stale.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".lock"


class Locked(RuntimeError):
    """The lock is held by another process; the message names the folder and the holder."""


@contextmanager
def exclusive(folder: Path, what: str) -> Iterator[None]:
    """Hold the lock of `folder` (created if absent) while the block runs; `what` names the folder's role
    in the refusal ("feature store", "grid run")."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "a process that has not said who"
            raise Locked(f"{what} {folder} is in use by {holder}: wait for it to finish (or stop it) and "
                         "run again") from None
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
