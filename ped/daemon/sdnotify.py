"""systemd's service notification (``sd_notify``): one datagram to ``$NOTIFY_SOCKET``.

A unit with ``Type=notify`` starts the daemon in the foreground and waits for
``READY=1`` before it calls the service started (and before units ordered after it
start).  The protocol is small enough to speak without a library: newline-separated
``KEY=VALUE`` fields in one datagram on the Unix socket whose path systemd puts in
``NOTIFY_SOCKET`` (a leading ``@`` names an abstract socket).  Without that variable
(not under systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
#: systemd reads at most this much of one STATUS= line meaningfully; keep datagrams small.
_MAX_STATUS = 1024


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # (vsock: addresses systemd gives to VMs; not used by these daemons)


def sd_notify(*fields: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send *fields* (``"READY=1"``, ``"STATUS=..."``) to systemd; True if sent."""
    env = os.environ if environ is None else environ
    address = _address(env.get(NOTIFY_SOCKET_ENV, ""))
    if address is None or not fields:
        return False
    message = "\n".join(field.replace("\n", " ") for field in fields).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError:
        return False  # systemd went away: nothing to tell, and nothing to fail over
    return True


def status_field(text: str) -> str:
    """A ``STATUS=`` field: the one line ``systemctl status`` shows."""
    return "STATUS=" + text[:_MAX_STATUS]


def notify_ready(status: str = "") -> bool:
    """``READY=1`` (and the status line): the service serves."""
    return sd_notify("READY=1", *([status_field(status)] if status else []))


def notify_stopping(reason: str = "") -> bool:
    """``STOPPING=1``: the service is stopping on purpose."""
    return sd_notify("STOPPING=1", *([status_field(f"stopping: {reason}")] if reason else []))


def notify_status(text: str) -> bool:
    """A new status line (e.g. why the service could not start)."""
    return sd_notify(status_field(text))
