"""Peer-to-peer connect cost, each figure beside a baseline on the same hops and processes.

Four connects are timed alternately in each round (so that a busy machine slows all alike):

* ``p2p_connect``: a *cold* pinned mutual TLS 1.3 handshake + TCP connect + link hello +
  RPV handshake with the orange key.  The TLS hop is made by the bench's TLS front
  (``python -m pedtools.bench.p2p serve --mode pinned-relay``), which accepts with
  ``ped.tls.accept_pinned_tls`` (the registry of pins, the ACCEPTED message: exactly what
  pedclient's peer listener runs) and relays to pedserver's TCP port; the HSM-side
  process dials it with ``ped.tls.open_pinned_tls_client`` (what pedserver runs when it
  dials a spare).  Path: HSM --TLS--> front --TCP--> pedserver --> emulated PED.  The
  daemons' own mode cannot be timed cold from the HSM: pedserver dials its spares
  before any HSM asks, so no TLS handshake is ever on an HSM's path when a spare is
  ready; this front puts one there, with the same ped.tls code.
* ``tls_baseline``: a bare trio mutual TLS 1.3 handshake (plain ``ssl`` contexts: TLS
  1.3, client certificate required, the peer's certificate as the only trust anchor; no
  pin registry, no ACCEPTED message) + link hello + one round trip of the RPV
  handshake's frame sizes bounced by the echo device, over the *same hops*: HSM --TLS-->
  a bare TLS front (``--mode bare-relay``) --TCP--> a second pedserver --> the echo
  device.  This is the standard connect's baseline with TLS in front of it.
* ``tls_direct`` (extra, the figure this bench used to call the baseline): a bare TLS
  handshake + one 32-byte round trip directly with an echoing TLS server
  (``--mode bare-echo``): one hop, no pedserver, no device.
* ``p2p_spare_connect``: the daemons' real peer-to-peer mode as an HSM sees it in
  steady use: pedclient (``--peer-listen``) hands the HSM a spare TLS connection
  pedserver dialled beforehand; then link hello + RPV handshake.  Its baseline,
  ``p2p_spare_baseline``, is the same on a spare from a second peer-to-peer pedserver
  whose device is the echo device: link hello + one bounce of the handshake's sizes.

All TLS ends use identities made by ``ped.tls``.
"""

from __future__ import annotations

import argparse
import ssl
import subprocess
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
from ped.tls import (
    PinStore,
    accept_pinned_tls,
    current_identity,
    ensure_identity,
    open_pinned_tls_client,
)
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
    """Pinned TLS to the front (as pedserver dials a spare), then the link hello."""
    identity = current_identity(home, "bench-dialler")  # cached, as pedserver's dial
    stream = await open_pinned_tls_client("127.0.0.1", front_port, identity, pins)
    return await link_hello(stream)


async def bare_connect(port: int, ctx: ssl.SSLContext) -> LinkTransport:
    """Bare TLS to the bare relay front, then the link hello (the baseline's connect)."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, ctx, server_hostname=None)
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return await link_hello(stream)


async def link_hello(stream: trio.abc.Stream) -> LinkTransport:
    link = LinkStream(stream, LinkConnection(Hop.REMOTE, Side.INITIATOR))
    await link.send(LinkHello(client_name="bench-p2p"))
    event = await link.receive()
    if not isinstance(event, LinkWelcome):
        await link.aclose()
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
    from ped.link import connect_via_pedclient
    from pedtools.bench.client import HSM_SERIAL, Recorder, bounce
    from pedtools.bench.echo_ped import echo_request

    home, peer_home = Path(job["tls_client_home"]), Path(job["tls_server_home"])
    pins = PinStore(home, program="pedserver")
    ctx = bare_context(home, peer_home, server=False)
    socket, peer, echo_peer = job["p2p_socket"], job["p2p_peer"], job["p2p_echo_peer"]

    async def spare(name: str) -> Any:
        return await connect_via_pedclient(socket, None, peer=name, hsm_name="bench-p2p",
                                           timeout=60.0)

    # Learn the RPV handshake's frame sizes once: the baselines bounce the same sizes.
    transport = await p2p_connect(job["front_port"], home, pins)
    recorder = Recorder(transport)  # type: ignore[arg-type]
    async with open_ped_session(recorder, rpv=rpv, hsm_serial=HSM_SERIAL):
        sizes = (list(recorder.sent), list(recorder.received))
    await transport.aclose()
    request = echo_request(sizes[1][:1], sizes[0][0])

    samples: dict[str, list[float]] = {
        "p2p_connect_ms": [], "tls_baseline_ms": [], "tls_direct_ms": [],
        "p2p_daemon_connect_ms": [], "p2p_spare_baseline_ms": [],
    }
    for i in range(job["warmup"] + job["count"]):
        times: dict[str, float] = {}
        # Both spares parked again (pedserver dials a replacement once the link that took
        # the last one settled or closed): no such dial runs while anything is timed.
        await wait_for_spares(socket, peer, echo_peer)
        t0 = time.perf_counter()
        transport = await p2p_connect(job["front_port"], home, pins)
        async with open_ped_session(transport, rpv=rpv, hsm_serial=HSM_SERIAL):
            times["p2p_connect_ms"] = time.perf_counter() - t0
        await transport.aclose()
        t0 = time.perf_counter()
        transport = await bare_connect(job["bare_relay_port"], ctx)
        await bounce(transport, request, 1)  # type: ignore[arg-type]
        times["tls_baseline_ms"] = time.perf_counter() - t0
        await transport.aclose()
        t0 = time.perf_counter()
        await bare_tls_round_trip(job["echo_tls_port"], ctx)
        times["tls_direct_ms"] = time.perf_counter() - t0
        # The daemons' mode, each from a spare parked beforehand (steady use).
        t0 = time.perf_counter()
        link = await spare(peer)
        async with open_ped_session(link, rpv=rpv, hsm_serial=HSM_SERIAL):
            times["p2p_daemon_connect_ms"] = time.perf_counter() - t0
        await link.aclose()
        await wait_for_spares(socket, peer, echo_peer)
        t0 = time.perf_counter()
        link = await spare(echo_peer)
        await bounce(link, request, 1)
        times["p2p_spare_baseline_ms"] = time.perf_counter() - t0
        await link.aclose()
        if i >= job["warmup"]:
            for key, seconds in times.items():
                samples[key].append(seconds * 1000)
    return {**samples, "frames": {"request": sizes[0], "replies": sizes[1]}}


async def wait_for_spares(socket_path: str, *peers: str) -> None:
    """Wait (untimed) until pedclient has a spare from each of *peers* parked, so that
    each sample measures a connect with its spare ready, as in steady use, and no
    replacement is being dialled meanwhile."""
    from ped.daemon.control import control_request_sync

    control = str(Path(socket_path).parent / "control.sock")
    with trio.fail_after(60):
        while True:
            info = await trio.to_thread.run_sync(
                lambda: control_request_sync(control, "show", timeout=30.0))
            ready = {p.get("name") for p in info.get("peer_links", []) if p.get("spares")}
            if ready.issuperset(peers):
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
    parser = argparse.ArgumentParser(prog="python -m pedtools.bench.p2p")
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


def run_p2p_jobs(rig: Any, plan: Any) -> dict[str, Any]:
    """Start the TLS fronts and the peer-to-peer pedclient and pedservers, run the p2p
    job, stop them (called by `pedtools.bench.run`)."""
    from pedtools.bench.procs import run_client, spawn, stop, wait_for
    from pedtools.bench.run import percentile, ratio

    work: Path = rig.work
    client_home, front_home = work / "tls-dialler", work / "tls-front"
    client_home.mkdir(mode=0o700)
    front_home.mkdir(mode=0o700)
    setup_pins(client_home, front_home)
    fronts: list[subprocess.Popen[bytes]] = []

    def front(mode: str, target: int = 0) -> Path:
        ready = work / f"front-{mode}.port"
        fronts.append(spawn(["-m", "pedtools.bench.p2p", "serve", "--mode", mode, "--home",
                             str(front_home), "--peer-home", str(client_home), "--target",
                             str(target), "--ready", str(ready)], work / f"front-{mode}.out"))
        return ready

    daemons: list[Any] = []
    try:
        readies = [front("pinned-relay", rig.ped_port), front("bare-relay", rig.echo_port),
                   front("bare-echo")]
        for ready, proc in zip(readies, fronts, strict=True):
            wait_for(ready, proc, f"the TLS front ({ready.stem})")
        p2p_socket = start_p2p_daemons(rig, daemons)
        job = rig.job("p2p", count=plan.p2p_count, warmup=plan.warmup,
                      front_port=int(readies[0].read_text()),
                      bare_relay_port=int(readies[1].read_text()),
                      echo_tls_port=int(readies[2].read_text()),
                      tls_client_home=str(client_home), tls_server_home=str(front_home),
                      p2p_socket=p2p_socket, p2p_peer="workstation",
                      p2p_echo_peer="workstation-echo")
        got = run_client(job, work, "p2p")
    finally:
        for daemon in daemons:
            daemon.stop()
        for proc in fronts:
            stop(proc)
    p50 = {key: percentile(got[key], 50) for key in (
        "p2p_connect_ms", "tls_baseline_ms", "tls_direct_ms", "p2p_daemon_connect_ms",
        "p2p_spare_baseline_ms")}
    return {
        "p2p_connect_p50_ms": p50["p2p_connect_ms"],
        "tls_baseline_p50_ms": p50["tls_baseline_ms"],
        "p2p_connect_ratio": ratio(p50["p2p_connect_ms"], p50["tls_baseline_ms"]),
        "tls_direct_p50_ms": p50["tls_direct_ms"],
        "p2p_connect_direct_ratio": ratio(p50["p2p_connect_ms"], p50["tls_direct_ms"]),
        "p2p_spare_connect_p50_ms": p50["p2p_daemon_connect_ms"],
        "p2p_spare_baseline_p50_ms": p50["p2p_spare_baseline_ms"],
        "p2p_spare_connect_ratio": ratio(p50["p2p_daemon_connect_ms"],
                                         p50["p2p_spare_baseline_ms"]),
        "p2p_note": (
            "p2p_connect: a cold pinned mutual TLS 1.3 handshake (ped.tls, through the "
            "bench's TLS front relaying to pedserver) + TCP connect + link hello + RPV "
            "handshake. tls_baseline: a bare mutual TLS 1.3 handshake (plain ssl "
            "contexts, no pins) + link hello + one round trip of the RPV handshake's "
            "sizes through the echo device, over the same hops (HSM side -> bare TLS "
            "front -> pedserver -> device). tls_direct: a bare TLS handshake + one round "
            "trip directly with an echoing TLS server (one hop; the old baseline), with "
            "p2p_connect_direct_ratio. p2p_spare_connect: the daemons' peer-to-peer mode "
            "as an HSM sees it: pedclient hands over a spare TLS connection pedserver "
            "dialled beforehand, then link hello + RPV handshake; p2p_spare_baseline: the "
            "same on a spare from a pedserver whose device is the echo device (link hello "
            "+ one round trip of the same sizes)"
        ),
    }


def start_p2p_daemons(rig: Any, daemons: list[Any]) -> str:
    """A pedclient listening for peers and two pedservers dialling it (the daemons' own
    peer-to-peer mode, certificates exchanged through their CLIs): ``workstation`` with
    the emulated PED, ``workstation-echo`` with the echo device; pedclient's socket."""
    from pedtools.bench.procs import Daemon

    client_home = rig.work / "p2p-client"

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
    servers: dict[str, Any] = {}
    for name, device in (("workstation", rig.ped_uri),
                         ("workstation-echo", f"socket:{rig.work / 'echo.sock'}")):
        servers[name] = Daemon(
            "pedserver", rig.work / f"p2p-{name}",
            {"max_links": 1024, "max_handshakes": 1024, "max_op_wait": 60},
            ["--ip", "127.0.0.1", "--port", "0", "--device", device])
        daemons.insert(0, servers[name])
    listen = str(client.wait_ready()["peer_listen"])
    port = listen.split(",")[0].rsplit(":", 1)[1]
    client_pem = rig.work / "p2p-client.pem"
    cli("pedclient", client_home, "certificate", "export", str(client_pem))
    for name, server in servers.items():
        server.wait_ready()
        server_pem = rig.work / f"p2p-{name}.pem"
        cli("pedserver", server.home, "certificate", "export", str(server_pem))
        cli("pedclient", client_home, "peer", "register", "--name", name,
            "--certificate", str(server_pem))
        cli("pedserver", server.home, "appliance", "register", "--name", "hsmhost",
            "--certificate", str(client_pem), "--ip", "127.0.0.1", "--port", port)
        cli("pedserver", server.home, "mode", "connect", "--name", "hsmhost")
    return str(client_home / "pedclient.sock")


if __name__ == "__main__":
    sys.exit(main())
