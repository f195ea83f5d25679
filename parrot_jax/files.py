"""Small file helpers shared by every module that writes results: atomic writes and content hashes.

`atomic_write(path, write)` leaves `path` either as it was or complete: the bytes go to a temporary
file beside it (``.<name>.tmp-<pid>``), which is flushed, fsynced, renamed over `path`, and the folder
is fsynced so that the rename survives a power cut. A killed writer leaves only such a temporary file,
which `remove_temporaries` deletes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_path(path: Path) -> Path:
    """Where `atomic_write` writes `path` first: ``.<name>.tmp-<pid>`` in the same folder."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` (creating its folder) so that it is either absent/old or complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json(path: str | Path, value: Any) -> None:
    """`value` as indented JSON (keys sorted), written atomically."""
    atomic_write(path, lambda f: f.write((json.dumps(value, indent=1, sort_keys=True) + "\n").encode()))


def remove_temporaries(folder: Path) -> None:
    """Delete the temporary files a killed `atomic_write` left in `folder` (never a finished file)."""
    for leftover in Path(folder).glob(".*.tmp-*"):
        leftover.unlink(missing_ok=True)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks (checkpoints of several GB included)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_files(paths: list[Path]) -> str:
    """Hex sha256 of the files' bytes concatenated in the given order (a sharded checkpoint)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """Hex sha256 of the canonical JSON of `value` (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
