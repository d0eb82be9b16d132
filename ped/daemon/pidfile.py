"""The daemon's pid file, locked for the daemon's whole life: the lock, not the pid, says
whether a daemon runs.

A pid alone cannot tell: after ``kill -9`` the pid in the file may be a zombie, or a
process that reused the number, and ``kill(pid, 0)`` calls either "running".  The
daemon therefore holds an exclusive ``flock`` on the file while it runs; the kernel
drops it when the process ends, however it ends.  A file nobody holds a lock on is a
leftover and never blocks a start.

``flock`` rather than POSIX ``lockf``: a POSIX lock is released when the process closes
*any* descriptor of the file (reading the file to show the pid would drop it), and an
``flock`` belongs to the one open file description, which Python does not pass to child
processes (descriptors are non-inheritable), so a PED child outliving the daemon cannot
keep the lock either.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from ped.daemon.process import DaemonStartError

#: How long a reader waits for a daemon that holds the lock to finish writing its pid.
_WRITE_WAIT = 1.0


class PidFile:
    """``HOME/<prog>.pid``: `write` takes the lock and records our pid, `running_pid`
    tells whether some process holds it, `remove` lets go."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None  # open and locked while this process owns the file

    def read(self) -> int | None:
        """The pid written in the file (whether or not that daemon still runs)."""
        try:
            text = self.path.read_text(encoding="ascii").strip()
            pid = int(text)
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            return None
        return pid if pid > 0 else None

    def running_pid(self) -> int | None:
        """The pid of the daemon holding the lock (0 if it has not written it yet); None
        when nobody holds it."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            if _try_lock(fd, fcntl.LOCK_SH):
                return None  # nobody holds it: a leftover of a daemon that died
        finally:
            os.close(fd)  # (our shared lock, if we got one, goes with it)
        deadline = time.monotonic() + _WRITE_WAIT
        pid = self.read()
        while pid is None and time.monotonic() < deadline:
            time.sleep(0.01)  # locked but not written yet: the daemon is starting
            pid = self.read()
        return pid if pid is not None else 0

    def write(self) -> None:
        """Take the lock and write our pid; `DaemonStartError` if another daemon holds it."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            if not _try_lock(fd, fcntl.LOCK_EX):
                os.close(fd)
                other = self.running_pid()
                raise DaemonStartError(
                    f"another instance is running (pid {other}, {self.path}); stop it first"
                )
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the file was removed (or replaced) while we locked: again
        os.fchmod(fd, 0o600)  # (a leftover may have been made by hand under another umask)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        os.fsync(fd)
        self._fd = fd

    @property
    def held(self) -> bool:
        """True while this process holds the lock."""
        return self._fd is not None

    def remove(self) -> None:
        """Remove the file and let go of the lock, if this process holds it."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if _same_file(self._fd, self.path):
                self.path.unlink()
        os.close(self._fd)
        self._fd = None


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)
