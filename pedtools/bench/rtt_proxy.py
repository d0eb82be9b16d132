"""A TCP proxy that holds every byte for half a round trip each way: a long link on loopback.

    python -m pedtools.bench.rtt_proxy --upstream-port P --rtt-ms 600 --port-file F

listens on 127.0.0.1 (port written to F once it listens) and relays each connection to
127.0.0.1:P, delivering every chunk ``rtt / 2`` after it was read, in order, in each
direction.  Only the bytes of the link are delayed: the TCP handshake to the proxy is
not (a real long link adds a round trip for it, and one more for TLS).

`DelayProxy` is also what the round-trip tests use in-process under trio's mock clock:
there a crossing of the proxy is the only thing that advances the clock, so the time a
login takes, divided by the round-trip time, is the number of round trips it waited.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import trio

#: One chunk read from a side: the deadline to deliver it, and its bytes (b"" = EOF).
_Chunk = tuple[float, bytes]
RECEIVE_CHUNK = 64 * 1024


class DelayProxy:
    """Relays connections to *upstream_port* with *rtt* seconds of round trip added."""

    def __init__(self, upstream_port: int, rtt: float, *, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.rtt = rtt
        self.connections = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Listen on an ephemeral loopback port (reported through *task_status*)."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = int(listeners[0].socket.getsockname()[1])
        task_status.started(port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, near: trio.SocketStream) -> None:
        self.connections += 1
        try:
            far = await trio.open_tcp_stream(*self.upstream)
        except OSError:
            await near.aclose()
            return
        async with near, far, trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, near, far, nursery.cancel_scope)
            nursery.start_soon(self._pipe, far, near, nursery.cancel_scope)

    async def _pipe(self, src: trio.SocketStream, dst: trio.SocketStream,
                    scope: trio.CancelScope) -> None:
        """Read *src* as bytes come; write each chunk to *dst* half a round trip later."""
        send, receive = trio.open_memory_channel[_Chunk](math.inf)
        half = self.rtt / 2

        async def read() -> None:
            while True:
                try:
                    data = await src.receive_some(RECEIVE_CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                send.send_nowait((trio.current_time() + half, bytes(data)))
                if not data:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            async for at, data in receive:
                await trio.sleep_until(at)
                if not data:
                    break
                try:
                    await dst.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
            nursery.cancel_scope.cancel()
        scope.cancel()  # one side ended: the connection ends (as a lost link would)


async def _main(args: argparse.Namespace) -> None:
    proxy = DelayProxy(args.upstream_port, args.rtt_ms / 1000)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(proxy.serve)
        partial = Path(f"{args.port_file}.partial")
        partial.write_text(str(port))
        os.replace(partial, args.port_file)  # whoever waits for the file reads it whole


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pedtools.bench.rtt_proxy")
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--rtt-ms", type=float, required=True)
    parser.add_argument("--port-file", required=True)
    trio.run(_main, parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
