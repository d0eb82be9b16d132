"""The HSM side's p2p job: cold pinned TLS connects and their baselines, timed alternately.

Runs in the bench client's process (`pedtools.bench.client`, job ``p2p``); see
`pedtools.bench.p2p` for what each figure is and the processes it goes through.
"""

from __future__ import annotations

import ssl
import time
from collections import deque
from pathlib import Path
from typing import Any

import trio

from ped.daemon.control import control_request_sync
from ped.hsm_api import open_ped_session
from ped.link import connect_via_pedclient
from ped.link.connection import ConnectionLost, Hop, LinkConnection, Side
from ped.link.messages import (
    Close,
    EndToEnd,
    LinkHello,
    LinkWelcome,
    OpBegin,
    OpEnd,
    OpGranted,
)
from ped.link.stream import LinkStream
from ped.tls import PinStore, current_identity, open_pinned_tls_client
from ped.transport import TransportClosed
from ped.wire.framing import Frame
from ped.wire.types import CloseCode
from pedtools.bench.echo_ped import echo_request
from pedtools.bench.p2p_front import bare_context
from pedtools.bench.probe import HSM_SERIAL, Recorder, bounce

PING = bytes(32)


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
    home, peer_home = Path(job["tls_client_home"]), Path(job["tls_server_home"])
    pins = PinStore(home, program="pedserver")
    ctx = bare_context(home, peer_home, server=False)
    socket, peer, echo_peer = job["p2p_socket"], job["p2p_peer"], job["p2p_echo_peer"]

    async def spare(name: str) -> Any:
        return await connect_via_pedclient(socket, None, peer=name, hsm_name="bench-p2p",
                                           timeout=60.0)

    # Learn the RPV handshake's frame sizes once: the baselines bounce the same sizes.
    transport = await p2p_connect(job["front_port"], home, pins)
    recorder = Recorder(transport)
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
        await bounce(transport, request, 1)
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
    control = str(Path(socket_path).parent / "control.sock")
    with trio.fail_after(60):
        while True:
            info = await trio.to_thread.run_sync(
                lambda: control_request_sync(control, "show", timeout=30.0))
            ready = {p.get("name") for p in info.get("peer_links", []) if p.get("spares")}
            if ready.issuperset(peers):
                return
            await trio.sleep(0.005)
