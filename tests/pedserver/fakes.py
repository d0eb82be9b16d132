"""Test doubles shared by the link, daemon, pedserver and pedclient tests.

* `FakeDriver`: a PED driver with the ``ped.device`` interface whose "PED" answers each
  end-to-end frame with one frame carrying the payload reversed (so a test can prove the
  relays pass both directions untouched), records every frame it gets, reports a
  non-secret DeviceEvent per frame, shares one operation lock across sessions, and can
  be unplugged.
* `running_pair`: pedserver (fake PED) and pedclient in this process on real sockets.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import trio

from ped.device import DeviceEvent, DeviceGone, DeviceInfo, DeviceNotFound, EventKind, PedDriver
from ped.transport import PedBusy, TransportClosed
from ped.wire.framing import Frame, encode_frame
from pedclient.client import PedClient
from pedclient.settings import Settings as ClientSettings
from pedserver.server import PedServer
from pedserver.settings import Settings as ServerSettings

REPLY_TYPE = {0x20: 0x21, 0x23: 0x23}


class FakeSession:
    def __init__(self, driver: FakeDriver, session_id: int) -> None:
        self.driver = driver
        self.id = session_id
        self._send, self._recv = trio.open_memory_channel[Frame](64)
        self.closed = False

    def _check(self) -> None:
        if self.driver.gone:
            raise DeviceGone(f"{self.driver.uri}: unplugged")
        if self.closed:
            raise TransportClosed("session closed")

    async def send(self, frame: Frame) -> None:
        self._check()
        self.driver.device_in.append(encode_frame(frame))
        reply = Frame(REPLY_TYPE.get(frame.type, frame.type), frame.payload[::-1])
        self.driver.device_out.append(encode_frame(reply))
        if self.driver.on_event is not None:
            self.driver.on_event(DeviceEvent(self.id, EventKind.KEY_READ, 1, "ks-test", "ok"))
        # A payload starting HOLD plays a PED waiting for its operator: no answer yet.
        if not self.driver.hold_replies and not frame.payload.startswith(b"HOLD"):
            self._send.send_nowait(reply)
        # BYE plays the end of an end-to-end session: the PED answers, then ends the
        # device session (as a real PED does after the HSM's goodbye).
        if frame.payload.startswith(b"BYE"):
            self.closed = True
            self._send.close()
            await self.end_operation()
        await trio.lowlevel.checkpoint()

    async def receive(self) -> Frame:
        if self.driver.gone:
            raise DeviceGone(f"{self.driver.uri}: unplugged")
        try:
            return await self._recv.receive()  # frames queued before a close come first
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self._check()
            raise TransportClosed("session closed") from None

    async def begin_operation(self, *, wait: float = 0.0) -> None:
        self._check()
        driver = self.driver
        deadline = trio.current_time() + max(wait, 0.0) if math.isfinite(wait) else math.inf
        while driver.owner is not None:
            if trio.current_time() >= deadline:
                raise PedBusy(f"{driver.uri}: busy")
            with trio.move_on_at(deadline):
                await driver.free.wait()
            self._check()
        driver.owner = self
        driver.free = trio.Event()
        driver.operations += 1

    async def end_operation(self) -> None:
        if self.driver.owner is self:
            self.driver.owner = None
            self.driver.free.set()

    async def aclose(self) -> None:
        await self.end_operation()
        self.closed = True
        self._send.close()
        self.driver.sessions.pop(self.id, None)


class FakeDriver(PedDriver):
    def __init__(self, uri: str = "fake:ped", *, present: bool = True) -> None:
        self.uri = uri
        self.info: DeviceInfo | None = None
        self.on_event = None
        self.present = present
        self.gone = False
        self.hold_replies = False
        self.device_in: list[bytes] = []
        self.device_out: list[bytes] = []
        self.sessions: dict[int, FakeSession] = {}
        self.owner: FakeSession | None = None
        self.free = trio.Event()
        self.free.set()
        self.operations = 0
        self.closed = False
        self._ids = itertools.count(1)

    async def open(self) -> DeviceInfo:
        await trio.lowlevel.checkpoint()
        if not self.present:
            raise DeviceNotFound(f"{self.uri}: no PED here")
        self.gone = False
        self.info = DeviceInfo("FakePED", "9.9.9", "FAKE-0001", "remote")
        return self.info

    async def open_session(self) -> FakeSession:  # type: ignore[override]
        await trio.lowlevel.checkpoint()
        if self.info is None or self.gone:
            raise DeviceGone(f"{self.uri}: not open")
        session = FakeSession(self, next(self._ids))
        self.sessions[session.id] = session
        return session

    async def aclose(self) -> None:
        self.closed = True
        for session in list(self.sessions.values()):
            await session.aclose()
        self.info = None

    def unplug(self) -> None:
        self.gone = True
        self.present = False
        self.info = None
        self.owner = None
        self.free.set()
        for session in list(self.sessions.values()):
            session._send.close()


# ------------------------------------------------------------------------ harness


@contextlib.contextmanager
def short_tmp() -> Iterator[Path]:
    """A short temporary directory (Unix socket paths must stay under ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="rp-", dir="/tmp"))
    os.chmod(path, 0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@attrs.define
class Pair:
    server: PedServer
    client: PedClient
    driver: FakeDriver
    port: int
    endpoint: Path
    home: Path


@contextlib.asynccontextmanager
async def running_pair(
    home: Path,
    driver: FakeDriver | None = None,
    *,
    server: dict[str, object] | None = None,
    client: dict[str, object] | None = None,
) -> AsyncIterator[Pair]:
    driver = driver or FakeDriver()
    srv = PedServer(
        ServerSettings(ip="127.0.0.1", port=0, device=driver.uri, **(server or {})),  # type: ignore[arg-type]
        driver,
        control_path=home / "server.sock",
    )
    cli = PedClient(
        ClientSettings(**(client or {})),  # type: ignore[arg-type]
        endpoint_path=home / "client.sock",
        control_path=home / "client-control.sock",
        name="testhost",
    )
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(srv.serve)
        endpoint = await nursery.start(cli.serve)
        try:
            yield Pair(srv, cli, driver, port, endpoint, home)
        finally:
            cli.request_stop("test over")
            srv.request_stop("test over")
