"""Streams handed from one owner to another (the peer-to-peer pools of pedserver/pedclient).

Theory of operation
-------------------
In peer-to-peer mode a connection is made *before* anyone needs it (pedserver keeps a
spare TLS connection dialled to each appliance) and handed to whoever uses it first.
Two small wrappers make that safe:

* `HandoffStream` gives back bytes already read from a stream (pedserver reads the
  first bytes of a spare connection to learn it was taken) before reading on, and calls
  a hook exactly once when the stream is closed (so pools can count links in use).
* `enable_tcp_keepalive` turns on TCP keepalives under a (TLS) stream, so a connection
  parked with nothing to say still finds out, within about a minute, that the network
  or the other host is gone.  The link protocol's own keepalives take over once a link
  runs on it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import trio

#: TCP keepalive: first probe after this many idle seconds, then every KEEPINTVL s, and
#: the connection is declared dead after KEEPCNT unanswered probes.
KEEPIDLE, KEEPINTVL, KEEPCNT = 20, 10, 3


class HandoffStream(trio.abc.Stream):
    """*stream*, with *prefix* (bytes already read from it) delivered first."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        prefix: bytes = b"",
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.stream = stream
        self._prefix = bytearray(prefix)
        self._on_close = on_close

    @property
    def transport_stream(self) -> trio.abc.Stream:
        return self.stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            n = len(self._prefix) if max_bytes is None else min(max_bytes, len(self._prefix))
            chunk = bytes(self._prefix[:n])
            del self._prefix[:n]
            await trio.lowlevel.checkpoint()
            return chunk
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        hook, self._on_close = self._on_close, None
        try:
            await self.stream.aclose()
        finally:
            if hook is not None:
                hook()


def raw_socket(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The socket under *stream* (through TLS and hand-off wrappers), if any."""
    seen = 0
    while seen < 8:  # bounded: wrappers never nest deeper
        sock = getattr(stream, "socket", None)
        if sock is not None:
            return sock  # type: ignore[no-any-return]
        inner = getattr(stream, "transport_stream", None)
        if inner is None:
            return None
        stream = inner
        seen += 1
    return None


def peer_address(stream: trio.abc.Stream) -> str | None:
    """The other end of *stream* as logs and ``mode show`` write it ("host:port", IPv6 in
    brackets), through TLS and hand-off wrappers; None without a connected socket."""
    sock = raw_socket(stream)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else (None, None)
    except (OSError, ValueError, TypeError):
        return None
    if host is None or not isinstance(port, int):  # e.g. a Unix socket's path
        return None
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def enable_tcp_keepalive(stream: trio.abc.Stream) -> bool:
    """Turn on TCP keepalives under *stream*; False if there is no TCP socket."""
    sock = raw_socket(stream)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", KEEPIDLE), ("TCP_KEEPINTVL", KEEPINTVL),
                            ("TCP_KEEPCNT", KEEPCNT)):
            option = getattr(socket, name, None)
            if option is not None:  # not every platform has all three
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:
        return False
    return True
