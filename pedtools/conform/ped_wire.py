"""A raw device-transport peer for ``pedconform ped``: any bytes out, every frame in, bounded.

The project's driver (``ped.device.host``) refuses to send what the protocol forbids;
the suite must send exactly that (a bad magic, trailing bytes, an unknown session) and
see what the PED does.  `RawLink` writes bytes or messages as given, reads the PED's
frames one at a time with a deadline (`NoAnswer`), and keeps the device events it skips
for the cases that look at them.  It reaches the PED by the same URI as the driver: the
connection itself is the driver's (`open_raw`), the protocol is not.
"""

from __future__ import annotations

import contextlib
import secrets

import attrs
import trio

from ped.device import open_driver
from ped.device.host import StreamPedDriver
from ped.device.messages import (
    DEVICE_TYPES,
    DeviceEvent,
    DeviceMessage,
    Hello,
    Info,
    Ping,
    Pong,
    SessionClose,
    SessionData,
    SessionOpen,
    SessionOpened,
    decode_message,
    encode_message,
)
from ped.errors import PedError, RemoteProtocolError
from ped.wire.framing import NEED_DATA, Frame, FrameDecoder


class NoAnswer(PedError):
    """The PED said nothing within the time allowed."""


@attrs.frozen
class Closed:
    """The PED ended the connection (the end of the stream)."""

    why: str = "the PED closed the connection"


class RawLink:
    """One host connection to the PED, driven frame by frame (see the module docstring)."""

    def __init__(self, stream: trio.abc.Stream, driver: StreamPedDriver) -> None:
        self.stream = stream
        self._driver = driver
        self._decoder = FrameDecoder(accepted=DEVICE_TYPES)
        self._queued: list[DeviceMessage | Closed] = []
        self.events: list[DeviceEvent] = []
        self.closed = False
        #: A frame of the PED that broke the envelope or a message (a finding in itself).
        self.garbage: str | None = None

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send(self, message: DeviceMessage) -> None:
        await self.send_bytes(encode_message(message))

    async def receive(self, timeout: float) -> DeviceMessage | Closed:
        """The PED's next message or `Closed`; `NoAnswer` after *timeout* seconds."""
        with trio.move_on_after(timeout):
            while not self._queued:
                await self._read()
            return self._queued.pop(0)
        raise NoAnswer(f"no answer in {timeout:g} s")

    async def _read(self) -> None:
        if self.closed:
            self._queued.append(Closed())
            return
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            data = b""
            self._queued.append(Closed(f"the connection failed: {exc}"))
            self.closed = True
            return
        if not data:
            self.closed = True
            self._queued.append(Closed())
            return
        try:
            self._decoder.feed(data)
            while (frame := self._decoder.next_frame()) is not NEED_DATA:
                assert isinstance(frame, Frame)
                self._queued.append(decode_message(frame))
        except (RemoteProtocolError, PedError) as exc:
            self.garbage = str(exc)
            self.closed = True
            self._queued.append(Closed(f"the PED sent a malformed frame: {exc}"))

    async def next_message(self, timeout: float) -> DeviceMessage | Closed:
        """Like `receive`, but device events are kept in `events`, not returned."""
        deadline = trio.current_time() + timeout
        while True:
            message = await self.receive(max(0.0, deadline - trio.current_time()))
            if isinstance(message, DeviceEvent):
                self.events.append(message)
                continue
            return message

    async def hello(self, timeout: float) -> Info:
        await self.send(Hello(host="pedconform"))
        answer = await self.next_message(timeout)
        if not isinstance(answer, Info):
            raise NoAnswer(f"HELLO was answered with {_name(answer)}, not INFO")
        return answer

    async def open_session(self, session: int, timeout: float) -> None:
        await self.send(SessionOpen(session))
        answer = await self.next_message(timeout)
        if not isinstance(answer, SessionOpened) or answer.session != session:
            raise NoAnswer(f"SESSION_OPEN({session}) was answered with {_name(answer)}")

    async def session_frame(self, session: int, timeout: float) -> Frame | Closed:
        """The next end-to-end frame of *session* (other sessions' frames are dropped)."""
        deadline = trio.current_time() + timeout
        while True:
            message = await self.next_message(max(0.0, deadline - trio.current_time()))
            if isinstance(message, Closed):
                return message
            if isinstance(message, SessionData) and message.session == session:
                return message.frame
            if isinstance(message, SessionClose) and message.session == session:
                return Closed(f"the PED closed session {session}")

    async def ping(self, timeout: float) -> bool:
        """A PING answered by its PONG within *timeout*; False if the PED closed first.

        What came before the PONG stays queued for the case that looks at it."""
        nonce = secrets.randbits(64)
        await self.send(Ping(nonce))
        deadline = trio.current_time() + timeout
        held: list[DeviceMessage | Closed] = []
        try:
            while True:
                message = await self.receive(max(0.0, deadline - trio.current_time()))
                if isinstance(message, Pong) and message.nonce == nonce:
                    return True
                if isinstance(message, DeviceEvent):
                    self.events.append(message)
                    continue
                held.append(message)
                if isinstance(message, Closed):
                    return False
        finally:
            self._queued[:0] = held

    def queued(self) -> list[DeviceMessage | Closed]:
        """What the PED sent that nobody took yet (and forget it)."""
        queued, self._queued = self._queued, []
        return queued

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            with contextlib.suppress(Exception):
                await self.stream.aclose()
            with contextlib.suppress(Exception):
                # The driver's own clean-up (a child pedemu to wait for).
                await self._driver.release_stream()


async def open_raw(uri: str) -> RawLink:
    """A raw connection to the PED at *uri* (the driver's `connect_stream`: no protocol)."""
    driver = open_driver(uri)
    if not isinstance(driver, StreamPedDriver):
        raise PedError(f"{uri}: this kind of PED cannot be reached raw")
    # The driver's connect step, without its HELLO: the suite speaks the protocol itself.
    stream = await driver.connect_stream()
    return RawLink(stream, driver)


def _name(message: DeviceMessage | Closed) -> str:
    if isinstance(message, Closed):
        return "the end of the connection"
    return type(message).__name__
