"""The emulated PED as a device: serves the device protocol to one host at a time.

Theory of operation
-------------------
`EmulatedPed` is the whole device: a `Panel` (screen, keypad, slot), a `PedEngine`
(operations over key images) and its identity (`Info`).  `serve(stream)` speaks the
device side of ``ped.device.connection`` on one byte stream (a Unix socket connection,
the socket pair to the driver's process, or a fake USB device).  Its reader dispatches:

* HELLO -> INFO (a HELLO drops every session, as after a host restart);
* SESSION_OPEN -> one `EmulatedSession` (``session.py``: the HSM session bridged to the
  engine), or SESSION_CLOSE(TOO_MANY_SESSIONS);
* SESSION_DATA -> that session, at once;  SESSION_CLOSE -> the session ends;
* PING -> PONG.

What goes out, and in which write, is ``output.py``'s business (the engine's non-secret
events go out as DEVICE_EVENT frames, riding with the next frame).  When the operator
pulls the cable (`Unplug`) the stream is closed at once, as a real unplug would; the
panel is ready for the next connection ("re-plug").
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable

import trio

from ped.channel.handshake import PedInfo
from ped.device.connection import DeviceConnection
from ped.device.emulated.engine import DEFAULT_KEY_TIMEOUT, PedEngine
from ped.device.emulated.output import DeviceOutput
from ped.device.emulated.panel import Panel
from ped.device.emulated.session import EmulatedSession
from ped.device.messages import (
    DEFAULT_MAX_SESSIONS,
    DEVICE_PROTOCOL_VERSION,
    ConnectionRole,
    DeviceErrorCode,
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
    encode_message,
)
from ped.errors import PedError
from ped.wire.framing import NEED_DATA

log = logging.getLogger("pedemu")

MODEL = "pedemu"
FIRMWARE = "1.0.0"
WRITER_DRAIN = 2.0
READ_CHUNK = 65536


class EmulatedPed:
    """One emulated PED (see the module docstring)."""

    def __init__(
        self,
        keyring: str | os.PathLike[str],
        *,
        serial: str = "EMU-0001",
        mode: str = "remote",
        key_timeout: float = DEFAULT_KEY_TIMEOUT,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        if mode not in ("remote", "local"):
            raise ValueError(f"PED mode must be 'remote' or 'local', not {mode!r}")
        #: The directory of key images at hand (the operators pick keys from it).
        self.keyring = keyring
        self.panel = Panel()
        self.engine = PedEngine(self.panel, key_timeout=key_timeout)
        self.info = Info(DEVICE_PROTOCOL_VERSION, MODEL, FIRMWARE, serial, mode, max_sessions)
        self.connected = False
        #: Held by whoever serves a host: the PED has one host at a time.
        self.host_lock = trio.Lock()

    @property
    def ped_info(self) -> PedInfo:
        return PedInfo(model=MODEL, serial=self.info.serial, firmware=FIRMWARE)

    async def serve(self, stream: trio.abc.Stream) -> None:
        """Serve one host on *stream* until it closes or the PED is unplugged."""
        if self.panel.unplugged.is_set():
            self.panel.unplugged = trio.Event()  # plugged back in
            self.panel.idle()
        self.connected = True
        try:
            await _Connection(self, stream).run()
        finally:
            self.connected = False


class _Connection:
    """One host's connection: reads and dispatches the device protocol (a `SessionHost`)."""

    def __init__(self, ped: EmulatedPed, stream: trio.abc.Stream) -> None:
        self.ped = ped
        self.stream = stream
        self.conn = DeviceConnection(ConnectionRole.DEVICE)
        self.output = DeviceOutput(stream, hang_up=self._hang_up, stopping=self._stopping)
        self.sessions: dict[int, EmulatedSession] = {}
        self.nursery: trio.Nursery | None = None

    # -- SessionHost
    def send(self, message: DeviceMessage) -> None:
        """Queue a message for the host (dropped if its session is gone)."""
        if isinstance(message, SessionData | DeviceEvent) and message.session:
            if message.session not in self.conn.sessions:
                return
        try:
            data = self.conn.send(message)
        except PedError as exc:
            log.debug("not sent: %s", exc)
            return
        if isinstance(message, DeviceEvent):
            self.output.hold_event(data)
        else:
            self.output.queue(data)

    def is_current(self, session: EmulatedSession) -> bool:
        return self.sessions.get(session.id) is session

    def forget(self, session: EmulatedSession) -> None:
        if self.is_current(session):
            del self.sessions[session.id]
            if session.id in self.conn.sessions:
                self.send(SessionClose(session.id, SessionCloseReason.NORMAL, "PED session ended"))

    def start_soon(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        assert self.nursery is not None
        self.nursery.start_soon(fn, *args)

    def deferring(self) -> contextlib.AbstractContextManager[None]:
        return self.output.deferring()

    async def push(self) -> None:
        await self.output.push()

    # -- the connection's life
    def _stopping(self) -> bool:
        assert self.nursery is not None
        return self.nursery.cancel_scope.cancel_called or self.ped.panel.unplugged.is_set()

    def _hang_up(self) -> None:
        self.output.cut_short()
        assert self.nursery is not None
        self.nursery.cancel_scope.cancel()

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self.output.writer)
                nursery.start_soon(self._watch_unplug)
                await self._reader()
                # Let the writer send what is queued (a DEVICE_ERROR saying why we hang
                # up), briefly: the host may be gone.
                self.output.close()
                with trio.move_on_after(WRITER_DRAIN):
                    await self.output.writer_done.wait()
                self._hang_up()
        finally:
            for session in list(self.sessions.values()):
                session.end()
            with trio.CancelScope(shield=True):
                try:
                    await self.stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

    async def _watch_unplug(self) -> None:
        try:
            await self.ped.panel.unplugged.wait()
            log.info("PED unplugged")
        finally:
            # Unplugged, or the connection is going down however (this task is
            # cancelled then): a `push` still writing stops at once.
            self._hang_up()

    async def _reader(self) -> None:
        while True:
            try:
                data = await self.stream.receive_some(READ_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            if not data:
                return
            try:
                self.conn.receive_data(data)
                messages: list[DeviceMessage] = []
                while (message := self.conn.next_event()) is not NEED_DATA:
                    messages.append(message)
            except PedError as exc:
                log.warning("host broke the device protocol: %s", exc)
                error = DeviceErrorMessage(DeviceErrorCode.PROTOCOL_ERROR, str(exc)[:200])
                self.output.queue(encode_message(error))
                return
            for message in messages:  # (outside the `try`: our faults are not the host's)
                self._handle(message)
            # Let an operation just started run (and write its answer) before this task
            # tries the next read, which usually finds nothing and re-arms the poller.
            await trio.lowlevel.checkpoint()

    def _handle(self, message: DeviceMessage) -> None:
        if isinstance(message, SessionData):
            session = self.sessions.get(message.session)
            if session is not None:  # (else closed already; the close crossed this frame)
                session.receive(message.frame)
        elif isinstance(message, Hello):
            dropped = list(self.sessions.values())
            self.sessions.clear()
            for session in dropped:
                session.end()
            if not message.min_version <= DEVICE_PROTOCOL_VERSION <= message.max_version:
                self.send(
                    DeviceErrorMessage(
                        DeviceErrorCode.UNSUPPORTED_VERSION,
                        f"this PED speaks device protocol {DEVICE_PROTOCOL_VERSION}",
                    )
                )
                return
            self.send(self.ped.info)
            log.info("host %r connected", message.host)
        elif isinstance(message, SessionOpen):
            if len(self.sessions) >= self.ped.info.max_sessions:
                self.send(
                    SessionClose(
                        message.session,
                        SessionCloseReason.TOO_MANY_SESSIONS,
                        f"the PED serves at most {self.ped.info.max_sessions}",
                    )
                )
                return
            self.sessions[message.session] = EmulatedSession(
                self,
                message.session,
                engine=self.ped.engine,
                local_mode=self.ped.info.mode == "local",
                ped_info=self.ped.ped_info,
            )
            self.send(SessionOpened(message.session))
        elif isinstance(message, SessionClose):
            closed = self.sessions.pop(message.session, None)
            if closed is not None:
                closed.end()
        elif isinstance(message, Ping):
            self.send(Pong(message.nonce))
