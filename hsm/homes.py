"""Where pedhsm finds its HSM and pedclient's socket, and what it says when nothing is there.

Homes are found as pedserver and pedclient find theirs (`ped.daemon.home`): ``--home
DIR``, else ``PEDHSM_HOME``, else the per-user default.  pedclient's socket defaults to
pedclient's own for the same user, and ``mode start`` warns when nothing answers there.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

HOME_ENV = "PEDHSM_HOME"


def default_home_text() -> str:
    from ped.daemon.home import default_home

    return f"${HOME_ENV} if set, else {default_home('pedhsm')}"


def home_hint(home: str | None) -> str:
    """Where this command looked for its HSM, and how to point it elsewhere."""
    if home:
        source = "--home"
    elif os.environ.get(HOME_ENV):
        source = f"${HOME_ENV}"
    else:
        source = "the default"
    return (
        f"the home came from {source}; pedhsm finds its HSM by --home DIR, else "
        f"{default_home_text()}: give the --home of `mode start`, or export {HOME_ENV}"
    )


def default_pedclient() -> str | None:
    """pedclient's own socket for this user (what `pedclient mode start` listens on)."""
    from ped.errors import PedError
    from ped.link.hsm_side import default_pedclient_socket

    try:
        return str(default_pedclient_socket())
    except PedError:
        return None  # pedclient's home is unusable: `hsm ped connect` will say so


#: Linux's table of Unix sockets; flag 0x10000 (__SO_ACCEPTCON) marks a listening one.
PROC_NET_UNIX = Path("/proc/net/unix")
LISTENING = 0x10000


def listening(path: str, table: Path = PROC_NET_UNIX) -> bool:
    """Whether a Unix socket listens on *path*.

    Read from the kernel's socket table rather than by connecting: a connection would
    be one more (empty) link for pedclient, with a link number of its own.  Where the
    table cannot be read, a connection it is.
    """
    wanted = os.path.abspath(path)
    try:
        rows = table.read_text().splitlines()[1:]
    except OSError:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(path)
            except OSError:
                return False
            return True
    for row in rows:
        fields = row.split(None, 7)
        if len(fields) == 8 and fields[7] == wanted and int(fields[3], 16) & LISTENING:
            return True
    return False


def pedclient_warning(path: str | None) -> str:
    """A warning when nothing answers on pedclient's socket *path* ("" when pedclient does)."""
    if not path:
        return "no pedclient socket is known: `hsm ped connect` needs --pedclient PATH"
    if listening(path):
        return ""
    return (
        f"nothing answers on pedclient's socket {path} (pedclient not started yet?); "
        "`hsm ped connect` needs pedclient there: start it as this user with "
        "`pedclient mode start`, or restart pedhsm with --pedclient PATH"
    )
