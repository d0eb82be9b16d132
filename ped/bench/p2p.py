"""Peer-to-peer connect cost: pinned mutual TLS 1.3 + link hello + RPV handshake, beside a
bare trio mutual TLS 1.3 handshake + one round trip.

The daemons' peer-to-peer mode was not ready when this bench was written, so the TLS hop
is made by the bench's own TLS front process (``python -m ped.bench.p2p serve``):

* ``--mode pinned-relay``: accepts with ``ped.tls.accept_pinned_tls`` (the registry of
  pins, the ACCEPTED message: exactly what pedclient's peer listener runs) and relays
  the bytes to pedserver's TCP port.  The HSM-side process dials it with
  ``ped.tls.open_pinned_tls_client`` (as pedserver dials in peer-to-peer mode), sends
  the link hello over TLS, takes the welcome and runs the RPV handshake through
  pedserver to the emulated PED: HSM --TLS--> front --TCP--> pedserver --> PED, three
  hops like the standard path.
* ``--mode bare-echo``: a plain ``ssl`` server context (TLS 1.3, client certificate
  required, the peer's certificate as the only trust anchor, no pin registry, no
  ACCEPTED message), echoing what it reads: the baseline.

Both ends use the same identities (the certificates ``ped.tls`` makes).
"""

from __future__ import annotations

import argparse
import ssl
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import trio

from ped.link.connection import ConnectionLost, Hop, LinkConnection, Side
from ped.link.messages import (
    Close,
    CloseCode,
    EndToEnd,
    LinkHello,
    LinkWelcome,
    OpBegin,
    OpEnd,
    OpGranted,
)
from ped.link.stream import LinkStream
from ped.tls import PinStore, accept_pinned_tls, ensure_identity, open_pinned_tls_client
from ped.transport import TransportClosed
from ped.wire.framing import Frame

PING = bytes(32)


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


class LinkTransport:
    """A minimal `FrameTransport` over a remote-hop link (what pedclient does for an HSM)."""

    def __init__(self, link: LinkStream) -> None:
        self.link = link
        self.pending: deque[Frame] = deque()

    async def _next(self) -> Any:
        event = await self.link.receive()
        if isinstance(event, Close | ConnectionLost):
            raise TransportClosed(f"the link closed: {event!r}")
        return event

    async def send(self, frame: Frame) -> None:
        await self.link.send(EndToEnd(frame))

    async def receive(self) -> Frame:
        if self.pending:
            return self.pending.popleft()
        while True:
            event = await self._next()
            if isinstance(event, EndToEnd):
                return event.frame

    async def begin_operation(self, *, wait: float = 0.0) -> None:
        await self.link.send(OpBegin(int(wait * 1000)))
        while True:
            event = await self._next()
            if isinstance(event, OpGranted):
                return
            if isinstance(event, EndToEnd):
                self.pending.append(event.frame)
            elif not isinstance(event, OpGranted):
                continue

    async def end_operation(self) -> None:
        await self.link.send(OpEnd())

    async def aclose(self) -> None:
        await self.link.send_close_quietly(Close(CloseCode.NORMAL, "bench done"))


async def p2p_connect(front_port: int, home: Path, pins: PinStore) -> LinkTransport:
    identity = ensure_identity(home, "bench-dialler")
    stream = await open_pinned_tls_client("127.0.0.1", front_port, identity, pins)
    link = LinkStream(stream, LinkConnection(Hop.REMOTE, Side.INITIATOR))
    await link.send(LinkHello(client_name="bench-p2p"))
    event = await link.receive()
    if not isinstance(event, LinkWelcome):
        raise TransportClosed(f"no link welcome over TLS: {event!r}")
    return LinkTransport(link)


async def bare_tls_round_trip(port: int, ctx: ssl.SSLContext) -> None:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, ctx, server_hostname=None)
    try:
        await stream.do_handshake()
        await stream.send_all(PING)
        got = b""
        while len(got) < len(PING):
            data = await stream.receive_some(65536)
            if not data:
                raise TransportClosed("the TLS echo closed")
            got += data
    finally:
        await trio.aclose_forcefully(stream)


async def run_client_job(job: dict[str, Any], rpv: bytearray) -> dict[str, Any]:
    from ped.hsm_api import open_ped_session

    home, peer_home = Path(job["tls_client_home"]), Path(job["tls_server_home"])
    pins = PinStore(home, program="pedserver")
    ctx = bare_context(home, peer_home, server=False)
    from ped.link import connect_via_pedclient

    connects: list[float] = []
    daemon_connects: list[float] = []
    baselines: list[float] = []
    for i in range(job["warmup"] + job["count"]):
        t0 = time.perf_counter()
        transport = await p2p_connect(job["front_port"], home, pins)
        async with open_ped_session(transport, rpv=rpv, hsm_serial="150001"):
            t1 = time.perf_counter()
        await transport.aclose()
        t2 = time.perf_counter()
        await bare_tls_round_trip(job["echo_tls_port"], ctx)
        t3 = time.perf_counter()
        if job.get("p2p_socket"):
            # The daemons' peer-to-peer mode: pedclient hands the HSM a spare TLS
            # connection pedserver dialled beforehand; then link hello + RPV handshake.
            await wait_for_spare(job["p2p_socket"])
            t4 = time.perf_counter()
            link = await connect_via_pedclient(job["p2p_socket"], None, peer=job["p2p_peer"],
                                               hsm_name="bench-p2p", timeout=60.0)
            async with open_ped_session(link, rpv=rpv, hsm_serial="150001"):
                t5 = time.perf_counter()
            await link.aclose()
            if i >= job["warmup"]:
                daemon_connects.append((t5 - t4) * 1000)
        if i >= job["warmup"]:
            connects.append((t1 - t0) * 1000)
            baselines.append((t3 - t2) * 1000)
    return {"p2p_connect_ms": connects, "tls_baseline_ms": baselines,
            "p2p_daemon_connect_ms": daemon_connects}


async def wait_for_spare(socket_path: str) -> None:
    """Wait (untimed) until pedclient has a spare from the bench's pedserver parked, so
    that each sample measures a connect with its spare ready, as in steady use."""
    from ped.daemon.control import control_request_sync

    control = str(Path(socket_path).parent / "control.sock")
    with trio.fail_after(60):
        while True:
            info = await trio.to_thread.run_sync(
                lambda: control_request_sync(control, "show", timeout=30.0))
            if any(p.get("spares") for p in info.get("peer_links", [])):
                return
            await trio.sleep(0.005)


# ---------------------------------------------------------------------- the front process

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
    parser = argparse.ArgumentParser(prog="python -m ped.bench.p2p")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--mode", choices=["pinned-relay", "bare-echo"], required=True)
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


def run_p2p_jobs(rig: Any, plan: Any) -> dict[str, Any]:
    """Start the TLS fronts and a peer-to-peer pedserver/pedclient pair, run the p2p job,
    stop them (called by `ped.bench.run`)."""
    from ped.bench.procs import run_client, spawn, stop, wait_for
    from ped.bench.run import percentile, ratio

    work: Path = rig.work
    client_home, front_home = work / "tls-dialler", work / "tls-front"
    client_home.mkdir(mode=0o700)
    front_home.mkdir(mode=0o700)
    setup_pins(client_home, front_home)
    relay_ready, echo_ready = work / "front-relay.port", work / "front-echo.port"
    relay = spawn(["-m", "ped.bench.p2p", "serve", "--mode", "pinned-relay", "--home",
                   str(front_home), "--peer-home", str(client_home), "--target",
                   str(rig.ped_port), "--ready", str(relay_ready)], work / "front-relay.out")
    echo = spawn(["-m", "ped.bench.p2p", "serve", "--mode", "bare-echo", "--home",
                  str(front_home), "--peer-home", str(client_home), "--ready",
                  str(echo_ready)], work / "front-echo.out")
    daemons: list[Any] = []
    try:
        wait_for(relay_ready, relay, "the TLS front")
        wait_for(echo_ready, echo, "the TLS echo")
        p2p_socket = start_p2p_daemons(rig, daemons)
        job = rig.job("p2p", count=plan.p2p_count, warmup=plan.warmup,
                      front_port=int(relay_ready.read_text()),
                      echo_tls_port=int(echo_ready.read_text()),
                      tls_client_home=str(client_home), tls_server_home=str(front_home),
                      p2p_socket=p2p_socket, p2p_peer="workstation")
        got = run_client(job, work, "p2p")
    finally:
        for daemon in daemons:
            daemon.stop()
        stop(relay)
        stop(echo)
    p50 = percentile(got["p2p_connect_ms"], 50)
    base = percentile(got["tls_baseline_ms"], 50)
    daemon_p50 = percentile(got["p2p_daemon_connect_ms"], 50)
    return {
        "p2p_connect_p50_ms": p50,
        "tls_baseline_p50_ms": base,
        "p2p_connect_ratio": ratio(p50, base),
        "p2p_spare_connect_p50_ms": daemon_p50,
        "p2p_spare_connect_ratio": ratio(daemon_p50, base),
        "p2p_note": "p2p_connect: a cold pinned TLS 1.3 handshake (ped.tls, through the "
                    "bench's TLS front relaying to pedserver) + link hello + RPV handshake. "
                    "p2p_spare_connect: the daemons' peer-to-peer mode as an HSM sees it: "
                    "pedclient hands over a spare TLS connection pedserver dialled "
                    "beforehand, then link hello + RPV handshake",
    }


def start_p2p_daemons(rig: Any, daemons: list[Any]) -> str:
    """A pedclient listening for peers and a pedserver dialling it (the daemons' own
    peer-to-peer mode, certificates exchanged through their CLIs); pedclient's socket."""
    import subprocess

    from ped.bench.procs import Daemon

    server_home, client_home = rig.work / "p2p-server", rig.work / "p2p-client"

    def cli(program: str, home: Path, *argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", program, *argv, "--home", str(home)],
            capture_output=True, text=True, timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout

    client = Daemon("pedclient", client_home, {"max_links": 1024, "connect_timeout": 600},
                    ["--peer-listen", "--port", "0", "--peer-ip", "127.0.0.1"])
    daemons.append(client)
    server = Daemon("pedserver", server_home,
                    {"max_links": 1024, "max_handshakes": 1024, "max_op_wait": 60},
                    ["--ip", "127.0.0.1", "--port", "0", "--device", rig.ped_uri])
    daemons.insert(0, server)
    listen = str(client.wait_ready()["peer_listen"])
    server.wait_ready()
    port = listen.split(",")[0].rsplit(":", 1)[1]
    server_pem, client_pem = rig.work / "p2p-server.pem", rig.work / "p2p-client.pem"
    cli("pedserver", server_home, "certificate", "export", str(server_pem))
    cli("pedclient", client_home, "certificate", "export", str(client_pem))
    cli("pedclient", client_home, "peer", "register", "--name", "workstation",
        "--certificate", str(server_pem))
    cli("pedserver", server_home, "appliance", "register", "--name", "hsmhost",
        "--certificate", str(client_pem), "--ip", "127.0.0.1", "--port", port)
    cli("pedserver", server_home, "mode", "connect", "--name", "hsmhost")
    return str(client_home / "pedclient.sock")


if __name__ == "__main__":
    sys.exit(main())
