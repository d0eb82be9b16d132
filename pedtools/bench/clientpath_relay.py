"""The client-path figure's bare hops: a Unix socket relayed over mutual TLS 1.3 to an echo.

    python -m pedtools.bench.clientpath_relay --socket PATH --target PORT \
        --home DIR --peer-home DIR --ready FILE

It stands where hsmclient stands (an application's Unix socket in, a TLS connection to
the HSM host out), with nothing in between: each connection on ``--socket`` gets its own
bare mutual TLS 1.3 connection (`pedtools.bench.p2p_front.bare_context`) to 127.0.0.1:
``--target`` (the bench's TLS echo front, standing where pedhsm's listener stands), and
bytes are copied both ways.  ``--ready`` is made once the socket listens.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from pedtools.bench.p2p_front import bare_context


async def _pipe(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
    try:
        while data := await src.receive_some(65536):
            await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(dst)


async def serve(path: Path, target: int, home: Path, peer_home: Path, ready: Path) -> None:
    ctx = bare_context(home, peer_home, server=False)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(64)
    listener = trio.SocketListener(sock)

    async def handle(app: trio.SocketStream) -> None:
        try:
            tcp = await trio.open_tcp_stream("127.0.0.1", target)
            tls = trio.SSLStream(tcp, ctx, server_hostname="bench-server")
            await tls.do_handshake()
        except (OSError, trio.BrokenResourceError):
            await app.aclose()
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pipe, app, tls)
            nursery.start_soon(_pipe, tls, app)

    ready.touch()
    await trio.serve_listeners(handle, [listener])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pedtools.bench.clientpath_relay")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--target", required=True, type=int)
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--peer-home", required=True, type=Path)
    parser.add_argument("--ready", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        trio.run(serve, args.socket, args.target, args.home, args.peer_home, args.ready)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
