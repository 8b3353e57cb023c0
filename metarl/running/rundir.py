"""The run directory's files: one writer at a time, every file replaced atomically.

- :func:`run_lock` holds an OS-level lock (``flock`` on ``<run dir>/.lock``) for as long as a process writes
  the directory; a second writer is refused with a message naming the holder. The operating system releases
  the lock when its holder exits, however it exits (a ``SIGKILL`` included), so a lock is never stale.
- :func:`atomic_write` writes a file under a temporary name beside it, syncs it and renames it over the
  target: a reader (or a resume after a kill) sees the old file or the new one, never a part of one.
  :func:`remove_temp_files` removes what a killed writer left.
- :func:`write_json` writes strict JSON: NaN and infinities become ``null``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from metarl.errors import RunDirError

__all__ = ["RunDirError", "atomic_write", "finite_json", "remove_temp_files", "run_lock", "write_json"]

LOCK_NAME = ".lock"
_held: dict[Path, int] = {}  # run directories this process has locked, and how many times (re-entrant)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write(path: str | Path, content: str | bytes | Callable[[IO[bytes]], None]) -> Path:
    """Replace ``path`` with ``content`` (text, bytes, or a function writing to a binary file) atomically."""
    path = Path(path)
    tmp = _temp_name(path)
    try:
        with open(tmp, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def finite_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON's ``null``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def write_json(path: str | Path, value: Any) -> Path:
    """Write ``value`` as strict JSON (NaN and infinities as ``null``), atomically."""
    return atomic_write(path, json.dumps(finite_json(value), indent=2, allow_nan=False))


def remove_temp_files(run_dir: str | Path) -> list[Path]:
    """Remove the temporary files of writes cut short (``.<name>.tmp<pid>``) in a run directory and its
    ``checkpoints``; call it while holding the directory's lock. Returns what was removed."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir, "checkpoints")):
        for tmp in folder.glob(".*.tmp*"):
            if tmp.is_file():
                tmp.unlink()
                removed.append(tmp)
    return removed


def _holder(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"process {info['pid']} on {info['host']} ({info['command']}, since {since})"
    except (OSError, ValueError, KeyError, TypeError):  # the holder is between taking the lock and naming itself
        return "another process"


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the run directory's write lock (creating the directory); re-entrant within a process.

    Raises :class:`RunDirError` if another process holds it, naming that process, or if the directory
    cannot be created or written."""
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield run_dir
        finally:
            _held[key] -= 1
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run directory {str(run_dir)!r} exists and is not a directory")
    lock_file = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise RunDirError(f"run directory {str(run_dir)!r} cannot be written: {err.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(f"run directory {str(run_dir)!r} is in use by {_holder(lock_file)}; wait for it to "
                              "finish, or stop it first") from None
        command = " ".join(["metarl", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("metarl", "cli.py") \
            else " ".join(sys.argv) or "python"
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                                 "since": time.time()}).encode())
        _held[key] = 1
        try:
            yield run_dir
        finally:
            del _held[key]
    finally:
        os.close(fd)  # releases the lock
