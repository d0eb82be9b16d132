"""Host side of the device transport over any byte stream: a `PedDriver` and its sessions.

Theory of operation
-------------------
`StreamPedDriver` turns a byte stream to a PED (a Unix socket, a socket pair to a child
process, or two USB bulk endpoints wrapped as a stream) into a `PedDriver`.  The
protocol itself is ``ped.device.connection.DeviceConnection`` (sans-IO); this module only
moves bytes.

No background task: the driver is *pumped on demand*.  Whichever task needs something
from the device (a session's `receive`, opening a session, `ping`) takes the reader
role, reads one chunk, and dispatches every complete frame to the session queues it
belongs to; the other waiting tasks are woken and look at their queues again.  So the
driver needs no nursery from its caller, and a cancelled receive loses nothing (trio
streams do not consume bytes from a cancelled `receive_some`).

With `frames_first` (pedserver) the dispatch stops after a session's frame: it reaches
its session (and the HSM) before the device events behind it are parsed; the next pump
dispatches those before it reads again, and closing a session or the driver dispatches
what is left, so no event is lost.  The emulated PED writes an answer first and the
operation's events after it, in the same write.

The PED serves one operation at a time: `begin_operation` takes the driver-wide PED lock
(``ped_lock.py``) for the session (`PedBusy` after *wait* seconds), `end_operation` or
closing the session gives it back.  When the stream ends or fails, the device is *gone*:
every session and every call raises `DeviceGone` until `open()` reaches it again.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import itertools
import secrets
import socket as _socket
from collections.abc import Callable
from typing import TypeVar

import trio

from ped.device.base import DeviceInfo, PedDriver
from ped.device.connection import DeviceConnection
from ped.device.errors import (
    DeviceGone,
    DeviceNotFound,
    DeviceNotOpen,
    TransportClosed,
)
from ped.device.messages import (
    ConnectionRole,
    DeviceErrorMessage,
    DeviceEvent,
    DeviceMessage,
    Hello,
    Info,
    Ping,
    Pong,
    SessionClose,
    SessionCloseReason,
    SessionData,
    SessionOpen,
    SessionOpened,
)
from ped.device.ped_lock import PedLock
from ped.errors import LocalProtocolError, PedError, RemoteProtocolError
from ped.transport import FrameTransport
from ped.wire.framing import NEED_DATA, Frame
from ped.wire.types import E2E_RANGE

#: How long the device has to answer HELLO, SESSION_OPEN or PING.
DEVICE_REPLY_TIMEOUT = 10.0
#: Frames a session may have waiting before the device is misbehaving.
MAX_QUEUED_FRAMES = 64
READ_CHUNK = 65536

_T = TypeVar("_T")


def _best_effort() -> contextlib.suppress:
    """Swallow the errors of best-effort cleanup (the device may already be gone)."""
    return contextlib.suppress(
        PedError, RemoteProtocolError, OSError, trio.BrokenResourceError, trio.ClosedResourceError
    )


class StreamPedDriver(PedDriver):
    """A `PedDriver` over a trio byte stream; subclasses say how to connect."""

    def __init__(self, uri: str, *, host_name: str | None = None) -> None:
        self.uri = uri
        self.info: DeviceInfo | None = None
        self.on_event = None
        self._host_name = (host_name or _socket.gethostname())[:64]
        self._stream: trio.abc.Stream | None = None
        self._conn: DeviceConnection | None = None
        self._generation = 0
        self._gone_reason: str | None = None
        self._send_lock = trio.Lock()
        self._open_lock = trio.Lock()
        self._reading = False
        self._changed = trio.Event()
        self._sessions: dict[int, DriverSession] = {}
        self._ids = itertools.count(1)
        self.ped_lock = PedLock(uri)
        self._pongs: set[int] = set()
        self._pending_info: DeviceMessage | None = None
        self._more_buffered = False  # frames of the last read not dispatched yet

    # ------------------------------------------------------------------ subclass hooks
    # Public: `open` runs the device protocol over them, and the PED conformance kit
    # (`pedtools.conform.ped_wire`) uses them to speak that protocol itself.
    @abc.abstractmethod
    async def connect_stream(self) -> trio.abc.Stream:
        """Reach the device and return a byte stream to it, before any device protocol
        (raise DeviceNotFound & co.)."""

    async def release_stream(self) -> None:
        """Release whatever `connect_stream` took beyond the stream (subclasses)."""

    # ------------------------------------------------------------------ driver API
    async def open(self) -> DeviceInfo:
        async with self._open_lock:
            if self._stream is not None and self._gone_reason is None and self.info:
                return self.info
            await self._drop_stream("reopening")
            stream = await self.connect_stream()
            self._stream = stream
            self._conn = DeviceConnection(ConnectionRole.HOST)
            self._more_buffered = False
            self._gone_reason = None
            self._generation += 1
            try:
                with trio.fail_after(DEVICE_REPLY_TIMEOUT):
                    await self._send(Hello(host=self._host_name))
                    info_msg = await self._pump_until(self._info_ready)
            except DeviceGone as exc:
                await self._drop_stream("open failed")
                raise DeviceNotFound(f"{self.uri}: the device is not usable: {exc}") from None
            except trio.TooSlowError:
                await self._drop_stream("no answer")
                raise DeviceNotFound(
                    f"{self.uri}: the device did not answer HELLO within "
                    f"{DEVICE_REPLY_TIMEOUT:g} s; is it a Remote PED?"
                ) from None
            except BaseException:
                await self._drop_stream("open failed")
                raise
            assert isinstance(info_msg, Info)
            self.info = DeviceInfo(
                info_msg.model, info_msg.firmware, info_msg.serial, info_msg.mode
            )
            return self.info

    async def open_session(self) -> FrameTransport:
        self._check_usable()
        session = DriverSession(self, next(self._ids), self._generation)
        self._sessions[session.id] = session
        try:
            with trio.fail_after(DEVICE_REPLY_TIMEOUT):
                await self._send(SessionOpen(session.id))
                await self._pump_until(lambda: session.opened or session.closed_reason)
        except trio.TooSlowError:
            self._sessions.pop(session.id, None)
            raise DeviceGone(f"{self.uri}: the device did not open a session in time") from None
        except BaseException:
            self._sessions.pop(session.id, None)
            raise
        if not session.opened:
            self._sessions.pop(session.id, None)
            raise TransportClosed(f"{self.uri}: the PED refused a session: {session.closed_reason}")
        return session

    async def ping(self) -> None:
        """Round trip to the device; `DeviceGone` if it does not answer."""
        self._check_usable()
        nonce = secrets.randbits(64)
        try:
            with trio.fail_after(DEVICE_REPLY_TIMEOUT):
                await self._send(Ping(nonce))
                await self._pump_until(lambda: nonce in self._pongs)
        except trio.TooSlowError:
            self._mark_gone("no answer to ping")
            raise DeviceGone(f"{self.uri}: the device stopped answering") from None
        self._pongs.discard(nonce)

    async def aclose(self) -> None:
        self._drain()
        for session in list(self._sessions.values()):
            if self._stream is not None and self._gone_reason is None and session.opened:
                with trio.move_on_after(1), _best_effort():
                    await self._send(
                        SessionClose(session.id, SessionCloseReason.NORMAL, "host closing")
                    )
            session._mark_closed("driver closed")
        self._sessions.clear()
        await self._drop_stream("closed")
        self._gone_reason = None  # closed, not gone: using it now is DeviceNotOpen
        self.info = None

    # ------------------------------------------------------------------ internals
    def _info_ready(self) -> DeviceMessage | None:
        if self._gone_reason is not None:
            raise DeviceGone(f"{self.uri}: {self._gone_reason}")
        return self._pending_info

    def _check_usable(self) -> None:
        if self._stream is None and self._gone_reason is None:
            raise DeviceNotOpen(f"{self.uri}: call open() before using the driver")
        if self._gone_reason is not None:
            raise DeviceGone(f"{self.uri}: {self._gone_reason}; open() the driver again")

    async def _send(self, message: DeviceMessage) -> None:
        self._check_usable()
        assert self._conn is not None and self._stream is not None
        data = self._conn.send(message)
        stream = self._stream
        async with self._send_lock:
            try:
                await stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._mark_gone(f"device connection lost ({type(exc).__name__})")
                raise DeviceGone(f"{self.uri}: the device went away") from None

    async def _pump_until(self, ready: Callable[[], _T]) -> _T:
        """Read and dispatch until ``ready()`` returns something truthy; return it."""
        while True:
            result = ready()
            if result:
                return result
            if self._gone_reason is not None:
                raise DeviceGone(f"{self.uri}: {self._gone_reason}")
            if self._reading:
                changed = self._changed
                await changed.wait()
                continue
            self._reading = True
            try:
                await self._read_once()
            finally:
                self._reading = False
                self._changed.set()
                self._changed = trio.Event()

    async def _read_once(self) -> None:
        if self._more_buffered:
            # Frames of the last read are still waiting: hand them over before reading
            # (nobody may sit in a read while a frame waits behind it).
            self._dispatch_buffered()
            return
        stream, conn = self._stream, self._conn
        assert stream is not None and conn is not None
        try:
            data = await stream.receive_some(READ_CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._mark_gone(f"device connection lost ({type(exc).__name__})")
            return
        try:
            if not data:
                try:
                    conn.receive_eof()
                finally:
                    self._dispatch_buffered(stop_at_frame=False)  # the frames before the end
                self._mark_gone("the device closed the connection (unplugged or stopped)")
                return
            conn.receive_data(data)
        except PedError as exc:
            self._mark_gone(f"the device broke the protocol: {exc}")
            return
        self._dispatch_buffered()

    def _dispatch_buffered(self, *, stop_at_frame: bool | None = None) -> None:
        """Parse and dispatch what the last read brought.  With `frames_first` this stops
        after a session's frame, so that it is handed over before the device events
        behind it are even parsed; the rest waits for the next pump (`_more_buffered`)."""
        conn = self._conn
        self._more_buffered = False
        if conn is None:
            return
        stop = self.frames_first if stop_at_frame is None else stop_at_frame
        try:
            while (message := conn.next_event()) is not NEED_DATA:
                self._dispatch(message)
                if stop and isinstance(message, SessionData):
                    self._more_buffered = True
                    return
        except PedError as exc:
            self._mark_gone(f"the device broke the protocol: {exc}")

    def _drain(self) -> None:
        """Hand over every frame already read (device events included), at once: a
        session closing, or the driver, must not leave the PED's last events unlogged."""
        if self._more_buffered and not self._reading:
            self._dispatch_buffered(stop_at_frame=False)
            self._changed.set()
            self._changed = trio.Event()

    def _dispatch(self, message: DeviceMessage) -> None:
        if isinstance(message, Info):
            self._pending_info = message
        elif isinstance(message, SessionData):
            session = self._sessions.get(message.session)
            if session is not None and not session.closed_reason:
                if len(session.queue) >= MAX_QUEUED_FRAMES:
                    session._mark_closed("the device sent more frames than the host can hold")
                else:
                    session.queue.append(message.frame)
        elif isinstance(message, SessionOpened):
            session = self._sessions.get(message.session)
            if session is not None:
                session.opened = True
        elif isinstance(message, SessionClose):
            session = self._sessions.get(message.session)
            if session is not None:
                why = message.detail or message.reason.name.lower().replace("_", " ")
                session._mark_closed(f"the PED closed the session: {why}")
        elif isinstance(message, DeviceEvent):
            if self.on_event is not None:
                try:
                    self.on_event(message)
                except Exception:  # noqa: S110 - a logging callback must not break the PED
                    pass
        elif isinstance(message, Pong):
            self._pongs.add(message.nonce)
        elif isinstance(message, DeviceErrorMessage):
            self._gone_reason = f"device error {message.code.name}: {message.detail}"
            self._fail_sessions()
            self.info = None

    def _mark_gone(self, reason: str) -> None:
        if self._gone_reason is None:
            self._gone_reason = reason
        self._fail_sessions()
        self.info = None

    def _fail_sessions(self) -> None:
        for session in self._sessions.values():
            session._mark_closed(self._gone_reason or "device gone", gone=True)
        self.ped_lock.release_any()

    async def _drop_stream(self, reason: str) -> None:
        stream, self._stream = self._stream, None
        self._pending_info = None
        if stream is not None:
            with trio.CancelScope(shield=True):
                with _best_effort():
                    await stream.aclose()
                await self.release_stream()
        if self._gone_reason is None:
            self._gone_reason = None if reason == "reopening" else reason
        self._fail_sessions()
        self._sessions.clear()
        self._changed.set()
        self._changed = trio.Event()


class DriverSession(FrameTransport):
    """One HSM session on a driver's PED (a `FrameTransport`)."""

    def __init__(self, driver: StreamPedDriver, session_id: int, generation: int) -> None:
        self._driver = driver
        self.id = session_id
        self._generation = generation
        self.opened = False
        self.closed_reason: str | None = None
        self._gone = False
        self.queue: collections.deque[Frame] = collections.deque()

    def __repr__(self) -> str:
        return f"<DriverSession {self.id} on {self._driver.uri}>"

    def _mark_closed(self, reason: str, *, gone: bool = False) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self._gone = gone
        self._driver.ped_lock.release(self)

    def _check(self) -> None:
        if self.closed_reason is not None:
            error = DeviceGone if self._gone else TransportClosed
            raise error(f"{self._driver.uri}: session closed: {self.closed_reason}")
        if self._driver._generation != self._generation:
            raise DeviceGone(f"{self._driver.uri}: the device was reopened; open a new session")

    async def send(self, frame: Frame) -> None:
        if frame.type not in E2E_RANGE:
            raise LocalProtocolError(
                f"only end-to-end frames (0x20-0x2F) go to the PED, not 0x{frame.type:02x}"
            )
        self._check()
        await self._driver._send(SessionData(self.id, frame))

    async def receive(self) -> Frame:
        def ready() -> bool:
            if self.queue:
                return True
            self._check()
            return False

        await self._driver._pump_until(ready)
        return self.queue.popleft()

    async def begin_operation(self, *, wait: float = 0.0) -> None:
        self._check()
        await self._driver.ped_lock.acquire(self, wait, self._check)

    async def end_operation(self) -> None:
        self._driver.ped_lock.release(self)

    async def aclose(self) -> None:
        if self.closed_reason is not None:
            self._driver._sessions.pop(self.id, None)
            return
        driver = self._driver
        if driver._generation == self._generation:
            driver._drain()
        self._mark_closed("closed by the host")
        driver._sessions.pop(self.id, None)
        if driver._generation == self._generation and driver._gone_reason is None:
            with trio.CancelScope(shield=True), trio.move_on_after(1), _best_effort():
                await driver._send(SessionClose(self.id, SessionCloseReason.NORMAL, "host closed"))


__all__ = ["DriverSession", "StreamPedDriver"]
