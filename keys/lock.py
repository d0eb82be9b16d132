"""One writer at a time per key directory.

A PED (emulated, in its own process) and ``pedkey`` may work on the same directory.
Operations that check a key and then write it ("is it blank? then imprint") hold an
exclusive ``flock`` on the directory itself (no lock file to leave behind) for the check
and the write, so two writers cannot both take the same blank key.  Readers do not lock:
every write is an atomic rename, so a reader sees an old or a new image, never a mix.

Within one process the lock is re-entrant per thread and directory, and a process-wide
RLock keeps threads of one process from interleaving (flock alone does not, since it is
held per open file).  Waiting is bounded: after ``LOCK_TIMEOUT`` seconds the operation
fails with `ImageAccessError` ("busy") and changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

from keys.errors import ImageAccessError, MissingImage

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: in-process locking only
    fcntl = None  # type: ignore[assignment]

LOCK_TIMEOUT = 10.0
_POLL = 0.05
_process_lock = threading.RLock()
_local = threading.local()


def _held() -> dict[str, int]:
    held = getattr(_local, "held", None)
    if held is None:
        held = _local.held = {}
    return held


@contextlib.contextmanager
def directory_lock(directory: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the exclusive write lock of ``directory`` (which must exist)."""
    key = os.path.realpath(directory)
    if not _process_lock.acquire(timeout=LOCK_TIMEOUT):
        raise ImageAccessError("key directory is busy in this process; try again", directory)
    try:
        held = _held()
        if held.get(key):
            held[key] += 1
            try:
                yield
            finally:
                held[key] -= 1
            return
        try:
            fd = os.open(key, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except FileNotFoundError:
            raise MissingImage("no such key directory", directory) from None
        except OSError as exc:
            raise ImageAccessError(
                f"cannot open the key directory ({exc.strerror})", directory
            ) from None
        try:
            _flock(fd, directory)
            held[key] = 1
            try:
                yield
            finally:
                del held[key]
        finally:
            os.close(fd)  # closing releases the flock
    finally:
        _process_lock.release()


def _flock(fd: int, directory: str | os.PathLike[str]) -> None:
    if fcntl is None:  # pragma: no cover
        return
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise ImageAccessError(
                    "key directory is busy (another pedkey or PED is writing to it); try again",
                    directory,
                ) from None
            time.sleep(_POLL)
