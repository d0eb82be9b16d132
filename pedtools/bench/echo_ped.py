"""The relay baseline's device: speaks the device transport, bounces end-to-end frames.

    python -m pedtools.bench.echo_ped --socket PATH

pedserver reaches it as ``socket:PATH`` exactly as it reaches ``pedemu``; it answers
HELLO, opens sessions and answers pings like a PED, but holds no key and runs no
channel or operation logic: every end-to-end frame it gets is answered at once by
frames of the same type.  So that the baseline moves the same bytes as the operation it
stands beside, a request may say which replies it wants: a payload that starts with
``b"ECHO"`` and a count byte, then that many 4-byte big-endian sizes, is answered by
that many frames of those payload sizes (zero-filled); any other payload is echoed
as it is.  Nothing here is secret: the bench sends zeros.
"""

from __future__ import annotations

import argparse
import os
import signal
import struct
import sys
from collections.abc import Sequence

import trio

from ped.device.connection import DeviceConnection
from ped.device.messages import (
    DEVICE_PROTOCOL_VERSION,
    ConnectionRole,
    Hello,
    Info,
    Ping,
    Pong,
    SessionData,
    SessionOpen,
    SessionOpened,
)
from ped.errors import PedError
from ped.wire.framing import NEED_DATA, Frame

MAGIC = b"ECHO"
#: The echo device serves this many sessions (the bench opens one per link).
MAX_SESSIONS = 4096
#: Largest reply the echo device makes (a frame payload bound well under the wire's).
MAX_REPLY = 60_000


def echo_request(reply_sizes: Sequence[int], size: int) -> bytes:
    """A request payload of *size* bytes asking for replies of *reply_sizes* bytes."""
    head = MAGIC + bytes([len(reply_sizes)]) + b"".join(struct.pack(">I", n) for n in reply_sizes)
    return head + bytes(max(0, size - len(head)))


def replies_for(payload: bytes) -> list[bytes]:
    """The reply payloads for one request payload (see the module docstring)."""
    if payload[:4] != MAGIC or len(payload) < 5:
        return [payload]
    count = payload[4]
    sizes = [struct.unpack_from(">I", payload, 5 + 4 * i)[0] for i in range(count)
             if 5 + 4 * i + 4 <= len(payload)]
    return [bytes(min(n, MAX_REPLY)) for n in sizes]


async def serve_host(stream: trio.abc.Stream) -> None:
    """Serve one host connection until it closes."""
    conn = DeviceConnection(ConnectionRole.DEVICE)
    info = Info(DEVICE_PROTOCOL_VERSION, "echo", "1.0.0", "ECHO-0001", "remote", MAX_SESSIONS)
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            try:
                conn.receive_data(bytes(data))  # a socket's bytes already: no copy
                out = _answers(conn, info)
            except PedError:
                return
            if out:
                await stream.send_all(out)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


def _answers(conn: DeviceConnection, info: Info) -> bytes:
    """The bytes that answer every message buffered in *conn* (PedError if malformed)."""
    out = bytearray()
    while (message := conn.next_event()) is not NEED_DATA:
        if isinstance(message, Hello):
            out += conn.send(info)
        elif isinstance(message, SessionOpen):
            out += conn.send(SessionOpened(message.session))
        elif isinstance(message, SessionData):
            for payload in replies_for(message.frame.payload):
                reply = Frame(message.frame.type, payload)
                out += conn.send(SessionData(message.session, reply))
        elif isinstance(message, Ping):
            out += conn.send(Pong(message.nonce))
    return bytes(out)


async def serve(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(128)
    listener = trio.SocketListener(sock)
    await trio.serve_listeners(serve_host, [listener])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pedtools.bench.echo_ped",
                                     description="Echo device for the relay baseline.")
    parser.add_argument("--socket", required=True, metavar="PATH")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        trio.run(serve, args.socket)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
