"""Small file helpers shared by every module that writes results: atomic writes and content hashes.

`atomic_write(path, write)` leaves `path` either as it was or complete: the bytes go to a temporary
file beside it (``.<name>.tmp-<pid>``), which is flushed, fsynced, renamed over `path`, and the folder
is fsynced so that the rename survives a power cut. A killed writer leaves only such a temporary file,
which `remove_temporaries` deletes. A folder written whole (a saved model, the demo corpus) goes the same
way: into ``.<name>.tmp-<pid>`` beside it, renamed into place; `remove_dead_temporaries` deletes what a
killed writer left.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as error:  # the writer failed or was interrupted: no temporary stays behind
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:  # a full disk: "[Errno 28] ...", naming no file
            raise OSError(error.errno, f"writing {path}: {error.strerror or error}") from None
        raise
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    """`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: str | Path, value: Any) -> None:
    """`value` as indented JSON (keys sorted), written atomically."""
    atomic_write(path, lambda f: f.write((json.dumps(value, indent=1, sort_keys=True) + "\n").encode()))


def read_text(path: str | Path) -> str:
    """A regular file's UTF-8 text (a leading byte-order mark kept); a ValueError naming the file where it is
    not a regular file (a FIFO would block the read), or naming the line of its first byte that is not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        bad = f"byte 0x{data[error.start]:02x} at offset {error.start}"
        raise ValueError(f"{path}:{line}: not UTF-8 text ({bad})") from None


def remove_temporaries(folder: Path) -> None:
    """Delete the temporary files a killed `atomic_write` left in `folder` (never a finished file)."""
    for leftover in Path(folder).glob(".*.tmp-*"):
        leftover.unlink(missing_ok=True)


def remove_dead_temporaries(path: Path) -> None:
    """Delete the temporaries of `path` (``.<name>.tmp-<pid>`` beside it, files or folders) whose process has
    ended: what a killed writer left. A live process's temporary (a writer at work) is kept."""
    path = Path(path)
    for leftover in path.parent.glob(f".{path.name}.tmp-*"):
        pid = leftover.name.rpartition("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)  # another process may be removing it too
            else:
                leftover.unlink(missing_ok=True)


def restore_interrupted_replace(path: Path) -> None:
    """Undo half a replacement: a writer that moves the old `path` aside (``.<name>.tmp-old-<pid>``) and was killed
    before renaming the new one into place left no `path`; the old one, complete, is put back."""
    path = Path(path)
    if path.exists():
        return
    for old in sorted(path.parent.glob(f".{path.name}.tmp-old-*")):
        pid = old.name.rpartition("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            os.rename(old, path)
            return


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


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
