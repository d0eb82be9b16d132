"""Crash-safe file replacement: a reader sees the old file or the new one, never a mix.

The new content goes to a temporary file in the *same directory* (so the rename stays on
one file system), created exclusively with mode 0600, written, fsync'ed and closed; then
``os.replace`` swaps it in atomically and the directory is fsync'ed so the rename itself
survives a power cut.  If anything fails before the rename, the temporary file is removed
and the old file is untouched.  A hard crash (power, SIGKILL) can leave a temporary file
behind: its name starts with ``.`` and contains ``.tmp-``, and `Keyring` ignores it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

TEMP_MARK = ".tmp-"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and TEMP_MARK in name


def atomic_write(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> None:
    """Replace ``path`` with ``data`` atomically, mode 0600.  Raises OSError on failure."""
    target = Path(path)
    directory = target.parent
    temp = directory / f".{target.name}{TEMP_MARK}{secrets.token_hex(6)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temp, flags, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask can only narrow 0600, but be explicit
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_directory(directory)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename in ``directory`` durable (best effort where the OS refuses)."""
    try:
        dfd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(dfd)
    finally:
        os.close(dfd)
