"""The bench's TLS fronts, each its own process, and the TLS identities of the p2p figures.

    python -m pedtools.bench.p2p_front serve --mode pinned-relay|bare-relay|bare-echo \
        --home DIR --peer-home DIR [--target PORT] --ready FILE

``pinned-relay`` accepts with ``ped.tls.accept_pinned_tls`` (what pedclient's peer
listener runs) and relays to pedserver's TCP port; ``bare-relay`` does the same after a
bare mutual TLS 1.3 handshake (plain ``ssl`` contexts, no pins); ``bare-echo`` echoes
what it reads over bare TLS.  Each writes its port to the ``--ready`` file once it
listens.  See `pedtools.bench.p2p` for what each figure puts them in front of.
"""

from __future__ import annotations

import argparse
import ssl
import sys
from pathlib import Path

import trio

from ped.tls import PinStore, accept_pinned_tls, ensure_identity


def bare_context(home: Path, peer_home: Path, *, server: bool) -> ssl.SSLContext:
    """A plain mutual TLS 1.3 context: our identity, the peer's certificate as trust."""
    ours = ensure_identity(home, "bench-server" if server else "bench-client")
    theirs = ensure_identity(peer_home, "bench-client" if server else "bench-server")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(ours.path))
    ctx.load_verify_locations(cadata=theirs.certificate_pem.decode("ascii"))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def _relay(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
    async def pipe(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(dst)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipe, a, b)
        nursery.start_soon(pipe, b, a)


async def serve(mode: str, home: Path, peer_home: Path, target: int, ready: Path) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    if mode == "pinned-relay":
        identity = ensure_identity(home, "bench-front")
        pins = PinStore(home, program="pedclient")

        async def handle(tcp: trio.SocketStream) -> None:
            try:
                stream, _name, _fp = await accept_pinned_tls(tcp, identity, pins)
                upstream = await trio.open_tcp_stream("127.0.0.1", target)
            except Exception:
                return
            await _relay(stream, upstream)
    elif mode == "bare-relay":
        ctx = bare_context(home, peer_home, server=True)

        async def handle(tcp: trio.SocketStream) -> None:
            stream = trio.SSLStream(tcp, ctx, server_side=True)
            try:
                await stream.do_handshake()
                upstream = await trio.open_tcp_stream("127.0.0.1", target)
            except Exception:
                await trio.aclose_forcefully(stream)
                return
            await _relay(stream, upstream)
    else:
        ctx = bare_context(home, peer_home, server=True)

        async def handle(tcp: trio.SocketStream) -> None:
            stream = trio.SSLStream(tcp, ctx, server_side=True)
            try:
                while data := await stream.receive_some(65536):
                    await stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            finally:
                await trio.aclose_forcefully(stream)

    tmp = ready.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.rename(ready)
    await trio.serve_listeners(handle, listeners)


def setup_pins(client_home: Path, front_home: Path) -> None:
    """Make both identities and pin each in the other's registry (done beforehand, as an
    administrator would with ``certificate export`` / ``peer register``)."""
    client = ensure_identity(client_home, "bench-dialler")
    front = ensure_identity(front_home, "bench-front")
    PinStore(client_home, program="pedserver").register(
        "front", front.certificate, ip="127.0.0.1", port=9697)
    PinStore(front_home, program="pedclient").register("dialler", client.certificate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pedtools.bench.p2p_front")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--mode", choices=["pinned-relay", "bare-relay", "bare-echo"],
                        required=True)
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--peer-home", required=True, type=Path)
    parser.add_argument("--target", type=int, default=0)
    parser.add_argument("--ready", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        trio.run(serve, args.mode, args.home, args.peer_home, args.target, args.ready)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
