"""How pedclient opens the way to pedserver: the `Dialer` seam and standard-mode TCP."""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable

import trio

from ped.errors import PedError
from ped.link.messages import ConnectCode, ConnectRequest


class DialError(PedError):
    """The way to pedserver could not be opened: a `ConnectCode` and a sentence."""

    def __init__(self, code: ConnectCode, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


#: Opens the byte stream to pedserver for a request within a timeout (s).
Dialer = Callable[[ConnectRequest, float], Awaitable[trio.abc.Stream]]


def _root_oserror(exc: BaseException) -> BaseException:
    """trio wraps per-address failures: find the first real OSError under *exc*."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        for leaf in cause.exceptions:
            if isinstance(leaf, OSError):
                return leaf
    return exc


async def tcp_dialer(request: ConnectRequest, timeout: float) -> trio.abc.Stream:
    """Standard mode: pedclient dials pedserver's TCP port."""
    target = request.target
    if request.peer:
        raise DialError(
            ConnectCode.PEER_UNAVAILABLE,
            f"{target}: peer-to-peer mode is not available in this pedclient; "
            "connect with the pedserver's address and port",
        )
    try:
        with trio.fail_after(timeout):
            return await trio.open_tcp_stream(request.host, request.port)
    except trio.TooSlowError:
        raise DialError(
            ConnectCode.TIMEOUT,
            f"no answer from {target} within {timeout:g} s: is the host up? "
            f"does a firewall drop port {request.port}?",
        ) from None
    except socket.gaierror:
        raise DialError(
            ConnectCode.UNREACHABLE,
            f"cannot resolve {request.host!r}: check the name or use an IP address",
        ) from None
    except OSError as exc:
        root = _root_oserror(exc)
        if isinstance(root, ConnectionRefusedError):
            raise DialError(
                ConnectCode.REFUSED,
                f"connection refused by {target}: is pedserver running on {target}? "
                "is the port open?",
            ) from None
        if isinstance(root, OSError) and root.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            raise DialError(
                ConnectCode.UNREACHABLE,
                f"{target} is unreachable ({root.strerror}): check the address and the "
                "network route",
            ) from None
        why = root.strerror if isinstance(root, OSError) and root.strerror else str(root)
        raise DialError(
            ConnectCode.UNREACHABLE,
            f"cannot connect to {target} ({why}): check the address, port and network",
        ) from None
