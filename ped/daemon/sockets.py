"""Unix socket paths a daemon listens on: clearing a stale socket file, owner-only binding."""

from __future__ import annotations

import enum
import errno
import os
import socket
import stat
from pathlib import Path

import trio

#: How long the probe waits for a listener that does not accept at once (a live but
#: busy daemon, its backlog full): it counts as live, never as a leftover.
PROBE_TIMEOUT = 1.0


class SocketPath(enum.Enum):
    """What `clear_stale_socket` found at a path."""

    FREE = "free"  # nothing there, or a socket nobody listens on (now removed)
    NOT_A_SOCKET = "not a socket"  # a file, directory or symlink: never removed
    LIVE = "live"  # something answers there: another daemon owns it


def clear_stale_socket(path: Path) -> SocketPath:
    """Remove the socket file a crashed process left at *path*; never a live one or a
    file that is not a socket.  `OSError` when the probe cannot tell (e.g. no access)."""
    if not path.exists() and not path.is_symlink():
        return SocketPath.FREE
    if not stat.S_ISSOCK(path.lstat().st_mode):
        return SocketPath.NOT_A_SOCKET
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(PROBE_TIMEOUT)
        probe.connect(str(path))
    except TimeoutError:
        return SocketPath.LIVE
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            path.unlink(missing_ok=True)  # nobody listens: a leftover from a crash
            return SocketPath.FREE
        raise
    finally:
        probe.close()
    return SocketPath.LIVE


async def listen_owner_only(path: Path, *, backlog: int = 64) -> trio.SocketListener:
    """Listen on a new Unix socket at *path*, readable and writable by its owner only;
    `OSError` (the socket closed) when it cannot."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return trio.SocketListener(sock)


def remove_socket_file(path: Path) -> None:
    """Remove our socket file on the way out (only if it still is a socket)."""
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except OSError:
        pass
