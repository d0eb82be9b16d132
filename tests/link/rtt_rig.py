"""A long link in this process: HSM -> pedclient -> delay proxy -> pedserver -> emulated PED.

Under trio's mock clock (`clock`) the proxy's crossings are the only thing that takes
time, so ``elapsed / RTT`` is how many round trips an exchange waited for (a structural
count, not a timing: CPU work takes no mock time).  `Recorder` keeps every end-to-end
frame the HSM side gave its transport, by hold, so a test can compare bytes.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from keys import Keyring, new_keyset
from keys.colors import Color
from ped.device.emulated.auto import AutoOperator
from ped.device.emulated.server import EmulatedPed
from ped.link import PedclientTransport, connect_via_pedclient
from ped.transport import PedBusy
from ped.wire.framing import Frame
from pedclient.client import PedClient
from pedclient.settings import Settings as ClientSettings
from pedserver.server import PedServer
from pedserver.settings import Settings as ServerSettings
from pedtools.bench.rtt_proxy import DelayProxy
from pedtools.fakes.inprocess import InProcessPedDriver

RTT = 0.6  # seconds of mock time per round trip between pedclient and pedserver


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # Jump only once nothing has moved for a few real milliseconds: bytes on loopback
    # sockets are seen before the clock jumps to the proxy's next delivery.
    return trio.testing.MockClock(autojump_threshold=0.01)


@attrs.frozen
class Keys:
    path: Path
    rpv: bytes
    blue_secret: bytes


def make_keys(path: Path) -> Keys:
    """An orange RPV key and a blue key, 1 of 1, no PED PIN (no scrypt thread)."""
    path.mkdir(parents=True, exist_ok=True)
    ring = Keyring(path)
    rpv, blue = secrets.token_bytes(32), secrets.token_bytes(32)
    ring.imprint(new_keyset(Color.ORANGE, "RPV", secret=rpv), create=True)
    ring.imprint(new_keyset(Color.BLUE, "HSM SO", secret=blue), create=True)
    return Keys(path, rpv, blue)


@attrs.define
class Rig:
    keys: Keys
    server: PedServer
    client: PedClient
    endpoint: Path
    proxy_port: int
    server_port: int

    async def connect(self, *, direct: bool = False) -> PedclientTransport:
        port = self.server_port if direct else self.proxy_port
        return await connect_via_pedclient(self.endpoint, "127.0.0.1", port, timeout=30)


@contextlib.asynccontextmanager
async def long_link(home: Path, keys: Keys, *, rtt: float = RTT) -> AsyncIterator[Rig]:
    async with trio.open_nursery() as nursery:
        ped = EmulatedPed(keys.path, serial="RTT-1")
        nursery.start_soon(AutoOperator(ped.panel, keys.path).run)
        driver = InProcessPedDriver(ped, nursery)
        server = PedServer(
            ServerSettings(ip="127.0.0.1", port=0, device=driver.uri),  # type: ignore[call-arg]
            driver, control_path=home / "server.sock",
        )
        client = PedClient(ClientSettings(), endpoint_path=home / "client.sock",
                           control_path=home / "client-control.sock", name="rtthost")
        _, server_port = await nursery.start(server.serve)
        endpoint = await nursery.start(client.serve)
        proxy_port = await nursery.start(DelayProxy(server_port, rtt).serve)
        try:
            yield Rig(keys, server, client, endpoint, proxy_port, server_port)
        finally:
            client.request_stop("test over")
            server.request_stop("test over")
            nursery.cancel_scope.cancel()


class Recorder:
    """A transport that passes everything to *inner* and keeps the frames it was given:
    ``holds`` has one list per hold begun (its pipelined frames, then those sent in it);
    *pipelining* False hides the inner transport's pipelining (an HSM that waits)."""

    def __init__(self, inner: PedclientTransport, *, pipelining: bool = True) -> None:
        self.inner = inner
        self.pipelining = pipelining
        self.holds: list[list[bytes]] = []
        self.busy: list[tuple[bytes, ...]] = []

    @property
    def pipelines(self) -> bool:
        return self.pipelining and self.inner.pipelines

    def announce_op_timeout(self, seconds: float) -> None:
        self.inner.announce_op_timeout(seconds)

    async def begin_operation_with(self, frames: Sequence[Frame], *, wait: float = 0.0) -> None:
        self.holds.append([bytes(f.payload) for f in frames])
        try:
            await self.inner.begin_operation_with(frames, wait=wait)
        except PedBusy as exc:
            self.busy.append(tuple(bytes(f.payload) for f in exc.undelivered))
            raise

    async def begin_operation(self, *, wait: float = 0.0) -> None:
        await self.begin_operation_with((), wait=wait)

    async def send(self, frame: Frame) -> None:
        self.holds[-1].append(bytes(frame.payload))
        await self.inner.send(frame)

    async def receive(self) -> Frame:
        return await self.inner.receive()

    async def end_operation(self) -> None:
        await self.inner.end_operation()

    async def aclose(self) -> None:
        await self.inner.aclose()


def round_trips(elapsed: float, rtt: float = RTT) -> float:
    return round(elapsed / rtt, 3)

