"""pedserver: serves one PED device to HSMs whose pedclient dials in.

Theory of operation
-------------------
One trio nursery holds: the TCP listener(s), the control socket (``mode show/stop``),
a device watcher that (re)opens the PED when it is absent, and one task group per
connection.  A connection must send a `LinkHello` within ``hello_timeout``; it is then
a *link* (at most ``max_links``) and is welcomed with the negotiated version, the shorter
idle timeout and what the PED is.  A link's task group runs:

* the reader: keepalives are answered; ``OpBegin`` maps to ``begin_operation`` on the
  link's own PED session (opened at its first operation), which is the PED's lock across
  all links: the link gets ``OpGranted``, or ``Busy`` (after waiting at most what it
  asked for, capped by ``max_op_wait``); ``OpEnd`` releases it; end-to-end frames go to
  the PED session untouched (only their type byte is ever looked at);
* the device pump: frames from the PED session go back on the link, untouched;
* the timer: a keepalive every ``keepalive_interval``; the link is closed with
  IDLE_TIMEOUT when no operation happened for its idle timeout (never while one is
  held), and with PEER_UNRESPONSIVE when nothing was heard for
  ``socket_read_rsp_timeout``.

Everything is bounded: hello time, frame size (the link decoder's maximum), links and
half-open connections, the wait for a busy PED.  A connection that sends garbage gets a
Close/LinkRefused naming the problem and is dropped; no other connection notices.
Stopping (SIGTERM, SIGINT, ``mode stop``) sends every link Close(SHUTTING_DOWN) first.

Logs carry one line per link event and per PED event (the device's non-secret
metadata: operation, colour, keyset id, result), never a payload byte.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from ped.daemon.cli import single_error
from ped.daemon.control import ControlError, Progress, serve_control
from ped.device import DeviceEvent, DeviceGone, DeviceInfo, EventKind, PedDriver
from ped.device.errors import DeviceError
from ped.errors import LocalProtocolError, PedError, RemoteProtocolError
from ped.link.connection import (
    ConnectionLost,
    Hop,
    LinkConnection,
    OpState,
    Side,
    negotiate_version,
)
from ped.link.errors import LinkClosed
from ped.link.messages import (
    LINK_VERSION_MAX,
    LINK_VERSION_MIN,
    Busy,
    Close,
    CloseCode,
    DeviceSummary,
    EndToEnd,
    Keepalive,
    KeepaliveAck,
    LinkHello,
    LinkRefused,
    LinkWelcome,
    OpBegin,
    OpEnd,
    OpGranted,
    RefuseCode,
    fit_text,
)
from ped.link.stream import LinkStream
from ped.transport import FrameTransport, PedBusy, TransportClosed
from ped.wire.framing import Frame
from pedserver.settings import Settings

log = logging.getLogger("pedserver")

#: How often an absent PED is looked for again.
DEVICE_RETRY_INTERVAL = 5.0
#: How long stopping waits for the Close frames to go out.
STOP_GRACE = 2.0
#: After the PED ends an end-to-end session while the link still holds the PED, how long
#: the HSM gets to release it (it does at once after its goodbye) before we conclude the
#: PED dropped the session mid-operation (e.g. it could not open a tampered frame).
ORPHANED_OP_GRACE = 2.0
#: PED event log lines that may wait for the logger task before they are written at once.
EVENT_LINES_MAX = 1024


class ServerStartError(PedError):
    """pedserver cannot start; the message says why and what to do."""


@attrs.define(eq=False)
class LinkRecord:
    """What pedserver knows about one connection (shown by ``mode show``)."""

    id: int
    peer: str
    link: LinkStream
    opened: float = attrs.field(factory=time.time)
    client_name: str = ""
    version: int = 0
    idle_timeout: int = 0
    doing: str = "hello"
    ops: int = 0
    session: FrameTransport | None = None
    op_started: float | None = None
    last_activity: float = 0.0  # trio clock
    last_heard: float = 0.0  # trio clock
    scope: trio.CancelScope | None = None
    end_reason: str = ""
    idle_applies: bool = True  # False on peer-to-peer links (pedserver/peer.py)

    @property
    def holds_ped(self) -> bool:
        return self.link.connection.op_state is OpState.HELD

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "peer": self.peer,
            "client": self.client_name,
            "version": self.version,
            "idle_timeout": self.idle_timeout,
            "mode": "standard" if self.idle_applies else "peer-to-peer",
            "since": round(self.opened, 3),
            "doing": self.doing,
            "operations": self.ops,
        }


def _peer_of(stream: trio.abc.Stream) -> str:
    while isinstance(stream, trio.SSLStream):  # peer-to-peer mode: TLS over TCP
        stream = stream.transport_stream
    sock = getattr(stream, "socket", None)
    try:
        host, port = sock.getpeername()[:2]  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError, TypeError):
        return "local"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class PedServer:
    """The pedserver daemon; `serve` runs it until `request_stop`."""

    def __init__(
        self,
        settings: Settings,
        driver: PedDriver,
        *,
        control_path: Path | None = None,
        on_stop_requested: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.driver = driver
        self.control_path = control_path
        self.device_info: DeviceInfo | None = None
        self.device_problem = "not opened yet"
        self.links: dict[int, LinkRecord] = {}
        self.handshaking = 0
        self.holder: LinkRecord | None = None
        self.address: tuple[str, int] | None = None
        self.started = time.time()
        self._ids = itertools.count(1)
        self._stop = trio.Event()
        self.stop_reason = ""
        self._device_lost = trio.Event()
        self._on_stop_requested = on_stop_requested
        self._sessions: dict[int, LinkRecord] = {}  # device session id -> link
        #: Control commands and ``show`` entries added by pedserver/peer.py.
        self.extra_commands: dict[
            str, Callable[[dict[str, Any], Progress], Awaitable[dict[str, Any]]]
        ] = {}
        self.show_extras: list[Callable[[], dict[str, Any]]] = []
        # The PED's events are logged by a task of their own, just after the frames that
        # came with them are relayed (see _on_device_event).
        self._event_lines: collections.deque[tuple[int, str, tuple[object, ...]]] = (
            collections.deque()
        )
        self._event_lines_ready = trio.Event()
        self._event_logger_running = False
        driver.on_event = self._on_device_event
        # Every session has its pump (_pump) receiving: the PED's answer is relayed
        # before the events behind it are parsed (ped.device.base.PedDriver.frames_first).
        driver.frames_first = True

    # ------------------------------------------------------------------ life cycle

    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            log.info("stopping: %s", reason)
            self._stop.set()

    async def serve(
        self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, serve links, stop gracefully; `ServerStartError` if it cannot start."""
        s = self.settings
        await self._try_open_device(first=True)
        try:
            listeners = await trio.open_tcp_listeners(s.port, host=s.ip)
        except OSError as exc:
            await self._close_driver()
            hint = (
                "is another pedserver running? pick another --port"
                if exc.errno in (98, 48)
                else "check --ip (an address of this host) and --port"
            )
            raise ServerStartError(
                f"cannot listen on {s.ip}:{s.port}: {exc.strerror or exc}; {hint}"
            ) from None
        bound = listeners[0].socket.getsockname()
        self.address = (str(bound[0]), int(bound[1]))
        try:
            await self._serve_listening(listeners, task_status)
        except BaseExceptionGroup as group:
            error = single_error(group)
            if isinstance(error, ServerStartError):
                raise error from None  # no ExceptionGroup at the public API
            raise
        finally:
            for listener in listeners:
                with trio.CancelScope(shield=True):
                    await listener.aclose()
            await self._close_driver()
            log.info("stopped")

    async def _serve_listening(
        self,
        listeners: list[trio.SocketListener],
        task_status: trio.TaskStatus[tuple[str, int]],
    ) -> None:
        s = self.settings
        assert self.address is not None
        async with trio.open_nursery() as nursery:
            if self.control_path is not None:
                try:
                    await nursery.start(serve_control, self.control_path, self._control)
                except ControlError as exc:
                    raise ServerStartError(str(exc)) from None
            async with trio.open_nursery() as links_nursery:
                nursery.start_soon(self._log_device_events)
                nursery.start_soon(self._device_watch)
                nursery.start_soon(self._accept_loop, listeners, links_nursery)
                log.info(
                    "listening on %s:%d, PED %s (%s), idle timeout %d s",
                    self.address[0], self.address[1], s.device or "(none)",
                    self._device_text(), s.idle_timeout,
                )
                task_status.started(self.address)
                await self._stop.wait()
                await self._close_all(CloseCode.SHUTTING_DOWN, "pedserver is stopping")
                links_nursery.cancel_scope.cancel()
            nursery.cancel_scope.cancel()

    async def _close_all(self, code: CloseCode, text: str) -> None:
        records = list(self.links.values())
        if records:
            log.info("closing %d link(s): %s", len(records), text)
        with trio.move_on_after(STOP_GRACE):
            async with trio.open_nursery() as nursery:
                for record in records:
                    nursery.start_soon(self._close_link, record, code, text)

    async def _close_driver(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(STOP_GRACE):
            try:
                await self.driver.aclose()
            except Exception as exc:
                log.warning("closing the PED driver failed: %s", type(exc).__name__)

    # ------------------------------------------------------------------ the device

    def _device_text(self) -> str:
        info = self.device_info
        if info is None:
            return f"not connected: {self.device_problem}"
        return f"connected, {info.model} firmware {info.firmware} serial {info.serial}"

    def device_summary(self) -> DeviceSummary:
        info = self.device_info
        if info is None:
            return DeviceSummary(False)
        return DeviceSummary(
            True, info.model[:64], info.firmware[:64], info.serial[:64], info.mode[:64]
        )

    async def _try_open_device(self, *, first: bool = False) -> bool:
        try:
            with trio.fail_after(30):
                self.device_info = await self.driver.open()
        except (DeviceError, TransportClosed, trio.TooSlowError, OSError) as exc:
            problem = str(exc) if not isinstance(exc, trio.TooSlowError) else "no answer in 30 s"
            if first or problem != self.device_problem:
                log.warning("PED %s is not available: %s", self.settings.device, problem)
            self.device_info = None
            self.device_problem = problem
            return False
        self.device_problem = ""
        log.info("PED %s", self._device_text())
        return True

    def _mark_device_gone(self, why: str) -> None:
        if self.device_info is not None:
            log.warning("PED went away: %s", why)
        self.device_info = None
        self.device_problem = why
        self._device_lost.set()

    async def _device_watch(self) -> None:
        while True:
            if self.device_info is None:
                await self._try_open_device()
                await trio.sleep(DEVICE_RETRY_INTERVAL)
            else:
                await self._device_lost.wait()
                self._device_lost = trio.Event()

    def _on_device_event(self, event: object) -> None:
        """Queue the log line of a PED event (non-secret by construction).

        The driver calls this while it dispatches what the PED sent in one write, which
        usually holds the operation's answer too: the line is written by
        `_log_device_events` on its next turn, just after the answer was relayed,
        rather than on the HSM's critical path.  Lines keep their order; none is dropped
        (past `EVENT_LINES_MAX` queued, or when no logger task runs, they are written at
        once).
        """
        if not isinstance(event, DeviceEvent):
            return
        if event.kind is EventKind.OP_STARTED and not log.isEnabledFor(logging.DEBUG):
            return  # the common case at info level: nothing to log, nothing to format
        record = self._sessions.get(event.session) if event.session else None
        where = f"link {record.id}" if record is not None else "PED"
        line: tuple[int, str, tuple[object, ...]]
        if event.kind is EventKind.OP_STARTED:
            # The finish line names the operation, its colour and result: one info line
            # per operation (plus one per key presented), not three.
            line = (logging.DEBUG, "%s: PED %s", (where, event))
        elif event.kind is EventKind.OP_FINISHED and record is not None:
            took = (
                f", {trio.current_time() - record.op_started:.1f} s"
                if record.op_started is not None
                else ""
            )
            line = (logging.INFO, "%s: PED %s (operation %d%s)", (where, event, record.ops, took))
        else:
            line = (logging.INFO, "%s: PED %s", (where, event))
        self._event_lines.append(line)
        if not self._event_logger_running or len(self._event_lines) > EVENT_LINES_MAX:
            self._write_event_lines()
        else:
            self._event_lines_ready.set()

    def _write_event_lines(self) -> None:
        while self._event_lines:
            level, text, args = self._event_lines.popleft()
            log.log(level, text, *(a.describe() if isinstance(a, DeviceEvent) else a
                                   for a in args))

    async def _log_device_events(self) -> None:
        self._event_logger_running = True
        try:
            while True:
                await self._event_lines_ready.wait()
                self._event_lines_ready = trio.Event()
                self._write_event_lines()
        finally:
            self._event_logger_running = False
            self._write_event_lines()

    # ------------------------------------------------------------------ connections

    async def _accept_loop(
        self, listeners: list[trio.SocketListener], nursery: trio.Nursery
    ) -> None:
        await trio.serve_listeners(self._handle_safely, listeners, handler_nursery=nursery)

    async def _handle_safely(self, stream: trio.abc.Stream) -> None:
        try:
            await self.handle_connection(stream)
        except Exception as exc:  # one connection never takes the daemon down
            log.error("connection handler failed: %s: %s", type(exc).__name__, exc)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    async def handle_connection(
        self, stream: trio.abc.Stream, peer: str | None = None, *, idle_timeout: bool = True
    ) -> None:
        """Serve one connection from hello to close (public so tests can feed memory
        streams and the peer-to-peer mode feeds dialled TLS streams, with
        ``idle_timeout=False``: a peer link is never closed for being idle)."""
        peer = peer or _peer_of(stream)
        link = LinkStream(stream, LinkConnection(Hop.REMOTE, Side.RESPONDER))
        record = LinkRecord(next(self._ids), peer, link, idle_applies=idle_timeout)
        if self.handshaking >= self.settings.max_handshakes:
            log.warning("connection %d from %s refused: too many connections in hello",
                        record.id, peer)
            await link.send_close_quietly(
                LinkRefused(RefuseCode.TOO_MANY_LINKS, "too many connections; retry later")
            )
            return
        self.handshaking += 1
        try:
            hello = await self._receive_hello(record)
        finally:
            self.handshaking -= 1
        if hello is None:
            return
        if not await self._welcome(record, hello):
            return
        try:
            await self._run_link(record)
        finally:
            self.links.pop(record.id, None)
            await self._teardown(record)
            await link.send_close_quietly(Close(CloseCode.NORMAL, "link closed"))
            log.info("link %d closed (%s); %d operation(s) served",
                     record.id, record.end_reason or "ended", record.ops)

    async def _receive_hello(self, record: LinkRecord) -> LinkHello | None:
        link = record.link
        try:
            with trio.move_on_after(self.settings.hello_timeout) as scope:
                event = await link.receive()
        except RemoteProtocolError as exc:
            log.warning("connection %d from %s dropped: not a Remote PED link hello (%s)",
                        record.id, record.peer, type(exc).__name__)
            await link.send_close_quietly(
                LinkRefused(RefuseCode.PROTOCOL_ERROR, fit_text(f"bad hello: {exc}"))
            )
            return None
        if scope.cancelled_caught:
            log.warning("connection %d from %s dropped: no hello within %d s",
                        record.id, record.peer, self.settings.hello_timeout)
            await link.send_close_quietly(
                LinkRefused(RefuseCode.PROTOCOL_ERROR, "no link hello in time")
            )
            return None
        if isinstance(event, LinkHello):
            return event
        if isinstance(event, ConnectionLost):
            log.info("connection %d from %s closed before its hello", record.id, record.peer)
        await link.aclose()
        return None

    async def _welcome(self, record: LinkRecord, hello: LinkHello) -> bool:
        link = record.link
        version = negotiate_version(hello)
        refusal: LinkRefused | None = None
        if version is None:
            refusal = LinkRefused(
                RefuseCode.UNSUPPORTED_VERSION,
                f"pedserver speaks link versions {LINK_VERSION_MIN}-{LINK_VERSION_MAX}, the "
                f"client {hello.min_version}-{hello.max_version}; upgrade the older side",
            )
        elif self._stop.is_set():
            refusal = LinkRefused(RefuseCode.SHUTTING_DOWN, "pedserver is stopping")
        elif len(self.links) >= self.settings.max_links:
            refusal = LinkRefused(
                RefuseCode.TOO_MANY_LINKS,
                f"pedserver serves {self.settings.max_links} links already; retry later",
            )
        if refusal is not None:
            log.warning("link from %s (%s) refused: %s", record.peer, hello.client_name,
                        refusal.text)
            await link.send_close_quietly(refusal)
            return False
        assert version is not None
        record.client_name = hello.client_name
        record.version = version
        record.idle_timeout = (
            min(hello.idle_timeout, self.settings.idle_timeout)
            if record.idle_applies
            else hello.idle_timeout  # the most the welcome may say; never enforced here
        )
        welcome = LinkWelcome(
            version,
            record.idle_timeout,
            self.settings.keepalive_interval,
            self.settings.server_name,
            self.device_summary(),
        )
        record.last_activity = record.last_heard = trio.current_time()
        record.doing = "idle"
        self.links[record.id] = record  # listed before the client can ask `mode show`
        try:
            await link.send(welcome)
        except LinkClosed:
            self.links.pop(record.id, None)
            log.info("connection %d from %s lost during the welcome", record.id, record.peer)
            await link.aclose()
            return False
        log.info("link %d open: from %s (%s), link version %d, idle timeout %d s",
                 record.id, record.peer, hello.client_name or "unnamed", version,
                 record.idle_timeout)
        return True

    # ------------------------------------------------------------------ one link

    async def _run_link(self, record: LinkRecord) -> None:
        async with trio.open_nursery() as nursery:
            record.scope = nursery.cancel_scope
            nursery.start_soon(self._timers, record)
            await self._reader(record, nursery)
            nursery.cancel_scope.cancel()

    async def _close_link(self, record: LinkRecord, code: CloseCode, text: str) -> None:
        if not record.end_reason:
            record.end_reason = f"{code.name.lower().replace('_', ' ')}: {text}"
        record.doing = "closing"
        await record.link.send_close_quietly(Close(code, fit_text(text)))
        if record.scope is not None:
            record.scope.cancel()

    async def _reader(self, record: LinkRecord, nursery: trio.Nursery) -> None:
        link = record.link
        while True:
            try:
                event = await link.receive()
            except RemoteProtocolError as exc:
                log.warning("link %d: protocol error from %s: %s", record.id, record.peer, exc)
                await self._close_link(record, CloseCode.PROTOCOL_ERROR, str(exc))
                return
            record.last_heard = trio.current_time()
            if isinstance(event, Keepalive):
                await self._send(record, KeepaliveAck(event.nonce))
            elif isinstance(event, KeepaliveAck):
                pass
            elif isinstance(event, OpBegin):
                await self._op_begin(record, event, nursery)
            elif isinstance(event, OpEnd):
                await self._op_end(record)
            elif isinstance(event, EndToEnd):
                record.last_activity = trio.current_time()
                if not await self._to_ped(record, event.frame, nursery):
                    return
            elif isinstance(event, Close):
                record.end_reason = record.end_reason or (
                    f"closed by the client: {event.code.name.lower()}"
                    + (f" ({event.text})" if event.text else "")
                )
                return
            elif isinstance(event, ConnectionLost):
                record.end_reason = record.end_reason or "the client's connection was lost"
                return

    async def _to_ped(self, record: LinkRecord, frame: Frame, nursery: trio.Nursery) -> bool:
        """Give an end-to-end frame to the link's PED session; False if the link ended."""
        for attempt in (1, 2):
            session = record.session
            if session is None:
                # The PED ended the session while this link holds the operation: a new
                # session takes the PED's lock before it is used.
                session = await self._ensure_session(record, nursery)
                if session is None:
                    return False
                try:
                    await session.begin_operation(wait=float(self.settings.max_op_wait))
                except PedBusy:
                    await self._close_link(
                        record, CloseCode.DEVICE_GONE,
                        "the PED ended the session and is now busy; connect again",
                    )
                    return False
                except TransportClosed as exc:
                    await self._device_failed(record, exc)
                    return False
            try:
                await session.send(frame)
                return True
            except TransportClosed as exc:
                if isinstance(exc, DeviceGone) or attempt == 2:
                    await self._device_failed(record, exc)
                    return False
                await self._drop_session(record, session)  # ended under us: once more
        return False  # pragma: no cover - the loop always returns

    async def _send(self, record: LinkRecord, message: Any) -> None:
        try:
            await record.link.send(message)
        except (LinkClosed, LocalProtocolError):
            # Lost, or already closed by another task of this link (its Close went out).
            record.end_reason = record.end_reason or "the client's connection was lost"
            if record.scope is not None:
                record.scope.cancel()
            await trio.lowlevel.checkpoint()

    async def _op_begin(self, record: LinkRecord, message: OpBegin, nursery: trio.Nursery) -> None:
        record.last_activity = trio.current_time()
        if self.device_info is None and not await self._try_open_device():
            await self._close_link(
                record, CloseCode.DEVICE_ABSENT,
                f"no PED is attached to pedserver on {self.settings.server_name} "
                f"({self.device_problem})",
            )
            return
        session = await self._ensure_session(record, nursery)
        if session is None:
            return
        wait = min(message.wait_ms / 1000, float(self.settings.max_op_wait))
        record.doing = "waiting for the PED"
        try:
            await session.begin_operation(wait=wait)
        except PedBusy:
            holder = self.holder
            who = (
                f"link {holder.id} from {holder.peer} ({holder.client_name or 'unnamed'})"
                if holder is not None and holder is not record
                else "another session on the PED"
            )
            record.doing = "idle"
            log.info("link %d: PED busy (held by %s); told the client to retry", record.id, who)
            await self._send(record, Busy(fit_text(who)))
            return
        except TransportClosed as exc:
            await self._device_failed(record, exc)
            return
        self.holder = record
        record.ops += 1
        record.op_started = trio.current_time()
        record.doing = "PED operation in progress"
        # Debug only: the PED's own events say the same at info (see _on_device_event).
        log.debug("link %d: PED operation %d started", record.id, record.ops)
        await self._send(record, OpGranted())

    async def _op_end(self, record: LinkRecord) -> None:
        record.last_activity = trio.current_time()
        await self._end_operation(record)
        record.doing = "idle"

    async def _end_operation(self, record: LinkRecord) -> None:
        if record.op_started is not None:
            took = trio.current_time() - record.op_started
            log.debug("link %d: PED operation %d ended after %.1f s", record.id, record.ops, took)
            record.op_started = None
        if self.holder is record:
            self.holder = None
        if record.session is not None:
            with trio.CancelScope(shield=True):
                try:
                    await record.session.end_operation()
                except PedError:
                    pass

    async def _teardown(self, record: LinkRecord) -> None:
        """The link is over: give the PED back and close its session on the PED."""
        await self._end_operation(record)
        session, record.session = record.session, None
        for key, value in list(self._sessions.items()):
            if value is record:
                del self._sessions[key]
        if session is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(STOP_GRACE):
                try:
                    await session.aclose()
                except PedError:
                    pass

    async def _ensure_session(
        self, record: LinkRecord, nursery: trio.Nursery
    ) -> FrameTransport | None:
        """The link's PED session, opened (with its pump) if it has none; None if the
        PED cannot give one (the link is then closed with the reason)."""
        if record.session is not None:
            return record.session
        try:
            session = await self.driver.open_session()
        except (TransportClosed, DeviceError) as exc:
            await self._device_failed(record, exc)
            return None
        record.session = session
        session_id = getattr(session, "id", None)
        if isinstance(session_id, int):
            self._sessions[session_id] = record
        nursery.start_soon(self._pump, record, session)
        return session

    async def _pump(self, record: LinkRecord, session: FrameTransport) -> None:
        """PED -> link, untouched."""
        while True:
            try:
                frame = await session.receive()
            except TransportClosed as exc:
                if isinstance(exc, DeviceGone) or self.device_info is None:
                    await self._device_failed(record, exc)
                    return
                # The PED ended this end-to-end session (after the HSM's goodbye, or a
                # refused handshake): the link stays; the next operation gets a new one.
                log.info("link %d: the PED ended its session; the next operation opens "
                         "a new one", record.id)
                await self._drop_session(record, session)
                await self._close_if_op_orphaned(record)
                return
            record.last_activity = trio.current_time()
            await self._send(record, EndToEnd(frame))

    async def _close_if_op_orphaned(self, record: LinkRecord) -> None:
        """Tell the HSM when the PED dropped its session in the middle of an operation.

        Without this the HSM would wait for an answer that never comes until its own
        operation timeout (pedo, 920 s by default).  A goodbye also ends the session, but
        the HSM then releases the PED at once, so only an operation still held after a
        grace period with no new session is orphaned.  The close is retriable for the HSM
        (a transport error), never a counted failed login.
        """
        await trio.sleep(ORPHANED_OP_GRACE)
        if record.holds_ped and record.session is None:
            log.warning(
                "link %d: the PED ended the session during an operation; closing the link",
                record.id,
            )
            await self._close_link(
                record,
                CloseCode.PROTOCOL_ERROR,
                "the PED ended the end-to-end session in the middle of an operation "
                "(it refused a frame it could not open); connect again",
            )

    async def _drop_session(self, record: LinkRecord, session: FrameTransport) -> None:
        if record.session is session:
            record.session = None
        for key, value in list(self._sessions.items()):
            if value is record and getattr(session, "id", None) == key:
                del self._sessions[key]
        with trio.CancelScope(shield=True), trio.move_on_after(STOP_GRACE):
            try:
                await session.aclose()
            except PedError:
                pass

    async def _device_failed(self, record: LinkRecord, exc: Exception) -> None:
        if isinstance(exc, DeviceGone) or self.device_info is None:
            self._mark_device_gone(str(exc))
            code, text = CloseCode.DEVICE_GONE, "the PED went away; check it and connect again"
        else:
            code, text = CloseCode.DEVICE_GONE, "the PED closed this session"
        log.warning("link %d: %s (%s)", record.id, text, type(exc).__name__)
        await self._close_link(record, code, text)

    async def _timers(self, record: LinkRecord) -> None:
        s = self.settings
        nonce = itertools.count(1)
        next_keepalive = trio.current_time() + s.keepalive_interval
        while True:
            now = trio.current_time()
            idle_at = (
                math.inf
                if record.holds_ped or record.doing == "waiting for the PED"
                or not record.idle_applies
                else record.last_activity + record.idle_timeout
            )
            dead_at = record.last_heard + s.socket_read_rsp_timeout
            if now >= dead_at:
                log.warning("link %d: nothing heard from %s for %d s", record.id, record.peer,
                            s.socket_read_rsp_timeout)
                await self._close_link(
                    record, CloseCode.PEER_UNRESPONSIVE,
                    f"nothing heard from the client for {s.socket_read_rsp_timeout} s",
                )
                return
            if now >= idle_at:
                log.info("link %d: idle for %d s", record.id, record.idle_timeout)
                await self._close_link(
                    record, CloseCode.IDLE_TIMEOUT,
                    f"no PED operation for {record.idle_timeout} s",
                )
                return
            if now >= next_keepalive:
                await self._send(record, Keepalive(next(nonce) & 0xFFFFFFFF))
                next_keepalive = now + s.keepalive_interval
            await trio.sleep_until(min(next_keepalive, idle_at, dead_at))

    # ------------------------------------------------------------------ control

    def show(self) -> dict[str, Any]:
        s = self.settings
        info = self.device_info
        return {
            "hostname": socket.gethostname(),
            "name": s.server_name,
            "ip": self.address[0] if self.address else s.ip,
            "port": self.address[1] if self.address else s.port,
            "pid": os.getpid(),
            "since": round(self.started, 3),
            "device": s.device,
            "device_connected": info is not None,
            "device_problem": "" if info is not None else self.device_problem,
            "model": info.model if info else "",
            "firmware": info.firmware if info else "",
            "serial": info.serial if info else "",
            "device_mode": info.mode if info else "",
            "idle_timeout": s.idle_timeout,
            "socket_read_rsp_timeout": s.socket_read_rsp_timeout,
            "keepalive_interval": s.keepalive_interval,
            "max_links": s.max_links,
            "link_versions": [LINK_VERSION_MIN, LINK_VERSION_MAX],
            "links": [r.describe() for r in sorted(self.links.values(), key=lambda r: r.id)],
        } | {k: v for extra in self.show_extras for k, v in extra().items()}

    async def _control(
        self, command: str, args: dict[str, Any], progress: Progress
    ) -> dict[str, Any]:
        if command == "show":
            return self.show()
        if command == "stop":
            self.request_stop("mode stop")
            if self._on_stop_requested is not None:
                self._on_stop_requested("mode stop")
            return {"stopping": True, "links": len(self.links)}
        if command in self.extra_commands:
            return await self.extra_commands[command](args, progress)
        known = ", ".join(["show", "stop", *self.extra_commands])
        raise ControlError(f"unknown command {command!r}; pedserver knows {known}",
                           "bad-request")

