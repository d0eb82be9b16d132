"""pedclient: relays between HSMs on this host and pedserver on a PED workstation.

Theory of operation
-------------------
HSMs on this host connect to the *local endpoint*, a Unix socket in pedclient's home
(0600, in a 0700 directory), and ask with a `ConnectRequest` for a link to pedserver
``A:P`` (or for a registered peer).  pedclient dials (the `Dialer` seam: TCP; for a
peer, pedclient/peer.py hands in a pinned mutual-TLS connection that pedserver dialled),
sends its `LinkHello` (idle timeout: the shorter of the HSM's and ours), and answers the
HSM with a `ConnectResult`: OK with what pedserver said, or a code and a sentence saying
what to check.  Several HSMs may hold links at once (up to ``max_links``), each on its
own connection to pedserver.

Once up, a link is two one-way relays and a keepalive:

    HSM --OpBegin/OpEnd/e2e/Close--> pedclient --same--> pedserver
    HSM <--OpGranted/Busy/e2e/Close-- pedclient <--same-- pedserver
                                      pedclient <-Keepalive/Ack-> pedserver

End-to-end frames pass as the same bytes (only the type byte is looked at).  If
pedserver goes away or stops answering for ``socket_read_rsp_timeout``, the HSM gets a
Close with SERVER_GONE / PEER_UNRESPONSIVE: a retriable error, never a failed login.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from ped.daemon.cli import single_error
from ped.daemon.control import ControlError, Progress, serve_control
from ped.errors import LocalProtocolError, PedError, RemoteProtocolError
from ped.link.connection import ConnectionLost, Hop, LinkConnection, LinkState, Side
from ped.link.errors import LinkClosed, describe_close
from ped.link.messages import (
    Busy,
    Close,
    CloseCode,
    ConnectCode,
    ConnectRequest,
    ConnectResult,
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
from pedclient.settings import Settings

log = logging.getLogger("pedclient")
STOP_GRACE = 2.0


class ClientStartError(PedError):
    """pedclient cannot start; the message says why."""


class DialError(Exception):
    """The way to pedserver could not be opened: a `ConnectCode` and a sentence."""

    def __init__(self, code: ConnectCode, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


#: Opens the byte stream to pedserver for a request within a timeout (s).
Dialer = Callable[[ConnectRequest, float], Awaitable[trio.abc.Stream]]


def _root_oserror(exc: BaseException) -> BaseException:
    """trio wraps per-address failures: find the first real OSError under *exc*."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        for leaf in cause.exceptions:
            if isinstance(leaf, OSError):
                return leaf
    return exc


async def tcp_dialer(request: ConnectRequest, timeout: float) -> trio.abc.Stream:
    """Standard mode: pedclient dials pedserver's TCP port."""
    target = request.target
    if request.peer:
        raise DialError(
            ConnectCode.PEER_UNAVAILABLE,
            f"{target}: peer-to-peer mode is not available in this pedclient; "
            "connect with the pedserver's address and port",
        )
    try:
        with trio.fail_after(timeout):
            return await trio.open_tcp_stream(request.host, request.port)
    except trio.TooSlowError:
        raise DialError(
            ConnectCode.TIMEOUT,
            f"no answer from {target} within {timeout:g} s: is the host up? "
            f"does a firewall drop port {request.port}?",
        ) from None
    except socket.gaierror:
        raise DialError(
            ConnectCode.UNREACHABLE,
            f"cannot resolve {request.host!r}: check the name or use an IP address",
        ) from None
    except OSError as exc:
        root = _root_oserror(exc)
        if isinstance(root, ConnectionRefusedError):
            raise DialError(
                ConnectCode.REFUSED,
                f"connection refused by {target}: is pedserver running on {target}? "
                "is the port open?",
            ) from None
        if isinstance(root, OSError) and root.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            raise DialError(
                ConnectCode.UNREACHABLE,
                f"{target} is unreachable ({root.strerror}): check the address and the "
                "network route",
            ) from None
        why = root.strerror if isinstance(root, OSError) and root.strerror else str(root)
        raise DialError(
            ConnectCode.UNREACHABLE,
            f"cannot connect to {target} ({why}): check the address, port and network",
        ) from None


@attrs.define(eq=False)
class ClientLink:
    """One HSM's link (shown by ``mode show``)."""

    id: int
    hsm: LinkStream
    hsm_name: str = ""
    target: str = ""
    server: LinkStream | None = None
    server_name: str = ""
    opened: float = attrs.field(factory=time.time)
    doing: str = "connecting"
    ops: int = 0
    idle_timeout: int = 0
    keepalive_interval: int = 30
    last_heard: float = 0.0
    end_reason: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "hsm": self.hsm_name,
            "target": self.target,
            "server": self.server_name,
            "since": round(self.opened, 3),
            "doing": self.doing,
            "operations": self.ops,
            "idle_timeout": self.idle_timeout,
        }


class PedClient:
    """The pedclient daemon; `serve` runs it until `request_stop`."""

    def __init__(
        self,
        settings: Settings,
        *,
        endpoint_path: Path,
        control_path: Path | None = None,
        dialer: Dialer = tcp_dialer,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.endpoint_path = endpoint_path
        self.control_path = control_path
        self.dialer = dialer
        self.name = (name or socket.gethostname())[:40]
        self.links: dict[int, ClientLink] = {}
        self.started = time.time()
        self._ids = itertools.count(1)
        self._stop = trio.Event()
        self.stop_reason = ""
        #: ``show`` entries added by the peer-to-peer side (pedclient/peer.py).
        self.show_extras: list[Callable[[], dict[str, Any]]] = []

    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            log.info("stopping: %s", reason)
            self._stop.set()

    # ------------------------------------------------------------------ life cycle

    async def serve(
        self, *, task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve HSMs until `request_stop`; `ClientStartError` if it cannot start."""
        listener = await self._listen()
        try:
            await self._serve_listening(listener, task_status)
        except BaseExceptionGroup as group:
            error = single_error(group)
            if isinstance(error, ClientStartError):
                raise error from None  # no ExceptionGroup at the public API
            raise
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
            try:
                if stat.S_ISSOCK(self.endpoint_path.lstat().st_mode):
                    self.endpoint_path.unlink()
            except OSError:
                pass
            log.info("stopped")

    async def _serve_listening(
        self, listener: trio.SocketListener, task_status: trio.TaskStatus[Path]
    ) -> None:
        async with trio.open_nursery() as nursery:
            if self.control_path is not None:
                try:
                    await nursery.start(serve_control, self.control_path, self._control)
                except ControlError as exc:
                    raise ClientStartError(str(exc)) from None
            async with trio.open_nursery() as links:
                nursery.start_soon(self._accept, listener, links)
                log.info("listening for HSMs on %s", self.endpoint_path)
                task_status.started(self.endpoint_path)
                await self._stop.wait()
                await self._close_all()
                links.cancel_scope.cancel()
            nursery.cancel_scope.cancel()

    async def _listen(self) -> trio.SocketListener:
        path = self.endpoint_path
        if len(os.fsencode(path)) > 100:
            raise ClientStartError(f"socket path {path} is too long; use a shorter --home")
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise ClientStartError(f"{path} exists and is not a socket; remove it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.settimeout(1.0)
                probe.connect(str(path))
            except OSError:
                path.unlink(missing_ok=True)
            else:
                raise ClientStartError(f"another pedclient already listens on {path}")
            finally:
                probe.close()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(str(path))
            os.chmod(path, 0o600)  # the directory is 0700 too: owner-only either way
            sock.listen(64)
        except OSError as exc:
            sock.close()
            raise ClientStartError(f"cannot listen on {path}: {exc.strerror}") from None
        return trio.SocketListener(sock)

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        await trio.serve_listeners(self._handle_safely, [listener], handler_nursery=nursery)

    async def _close_all(self) -> None:
        records = list(self.links.values())
        if records:
            log.info("closing %d link(s): pedclient is stopping", len(records))
        with trio.move_on_after(STOP_GRACE):
            async with trio.open_nursery() as nursery:
                for record in records:
                    nursery.start_soon(self._close_both, record, CloseCode.SHUTTING_DOWN,
                                       "pedclient is stopping")

    async def _close_both(self, record: ClientLink, code: CloseCode, text: str) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(record.hsm.send_close_quietly, Close(code, text))
            if record.server is not None:
                nursery.start_soon(record.server.send_close_quietly, Close(code, text))

    # ------------------------------------------------------------------ one HSM

    async def _handle_safely(self, stream: trio.abc.Stream) -> None:
        try:
            await self.handle_hsm(stream)
        except Exception as exc:  # one HSM never takes pedclient down
            log.error("HSM connection handler failed: %s: %s", type(exc).__name__, exc)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    async def handle_hsm(self, stream: trio.abc.Stream) -> None:
        """Serve one HSM connection on the local endpoint."""
        hsm = LinkStream(stream, LinkConnection(Hop.LOCAL, Side.RESPONDER))
        record = ClientLink(next(self._ids), hsm)
        request = await self._receive_request(record)
        if request is None:
            return
        record.hsm_name = request.hsm_name
        record.target = request.target
        refusal = None
        if self._stop.is_set():
            refusal = (ConnectCode.SHUTTING_DOWN, "pedclient is stopping; retry later")
        elif len(self.links) >= self.settings.max_links:
            refusal = (ConnectCode.TOO_MANY_LINKS,
                       f"pedclient serves {self.settings.max_links} links already; "
                       "disconnect one or raise max_links")
        if refusal is not None:
            log.warning("HSM %s: connect to %s refused: %s", request.hsm_name or "unnamed",
                        record.target, refusal[1])
            await hsm.send_close_quietly(ConnectResult(refusal[0], refusal[1]))
            return
        self.links[record.id] = record  # shown as "connecting" until the link is up
        result = None
        try:
            result = await self._connect(record, request)
            if result is not None:
                await self._relay(record)
        finally:
            self.links.pop(record.id, None)
            if result is not None:
                with trio.CancelScope(shield=True):
                    await hsm.send_close_quietly(Close(CloseCode.NORMAL, "link closed"))
                    if record.server is not None:
                        await record.server.send_close_quietly(
                            Close(CloseCode.NORMAL, "HSM disconnected")
                        )
                log.info("link %d (HSM %s -> %s) closed: %s; %d operation(s)", record.id,
                         record.hsm_name or "unnamed", record.target,
                         record.end_reason or "ended", record.ops)

    async def _receive_request(self, record: ClientLink) -> ConnectRequest | None:
        hsm = record.hsm
        try:
            with trio.move_on_after(self.settings.request_timeout) as scope:
                event = await hsm.receive()
        except RemoteProtocolError as exc:
            log.warning("local connection %d: bad connect request (%s)", record.id, exc)
            await hsm.send_close_quietly(
                ConnectResult(ConnectCode.BAD_REQUEST, fit_text(f"bad connect request: {exc}"))
            )
            return None
        if scope.cancelled_caught:
            log.warning("local connection %d: no connect request within %d s", record.id,
                        self.settings.request_timeout)
            await hsm.aclose()
            return None
        if isinstance(event, ConnectRequest):
            return event
        await hsm.aclose()
        return None

    async def _connect(self, record: ClientLink, request: ConnectRequest) -> LinkWelcome | None:
        hsm = record.hsm
        timeout = min(request.connect_timeout_ms / 1000, float(self.settings.connect_timeout))
        deadline = trio.current_time() + timeout
        log.info("link %d: HSM %s asks for %s", record.id, request.hsm_name or "unnamed",
                 record.target)
        try:
            stream = await self.dialer(request, timeout)
        except DialError as exc:
            log.warning("link %d: %s", record.id, exc.text)
            await hsm.send_close_quietly(ConnectResult(exc.code, fit_text(exc.text)))
            return None
        server = LinkStream(stream, LinkConnection(Hop.REMOTE, Side.INITIATOR))
        record.server = server
        idle = min(request.idle_timeout, self.settings.idle_timeout)
        name = f"{self.name}/{request.hsm_name}" if request.hsm_name else self.name
        failure: tuple[ConnectCode, str] | None = None
        welcome: LinkWelcome | None = None
        try:
            with trio.move_on_at(deadline) as scope:
                await server.send(LinkHello(idle_timeout=idle, client_name=name[:64]))
                event = await server.receive()
            if scope.cancelled_caught:
                failure = (ConnectCode.TIMEOUT,
                           f"{record.target} accepted the connection but sent no link welcome "
                           f"within {timeout:g} s: is it a pedserver?")
            elif isinstance(event, LinkWelcome):
                welcome = event
            elif isinstance(event, LinkRefused):
                code = (ConnectCode.PROTOCOL_ERROR
                        if event.code is RefuseCode.UNSUPPORTED_VERSION
                        else ConnectCode.LINK_REFUSED)
                failure = (code, f"pedserver at {record.target} refused the link: "
                           f"{event.text or event.code.name.lower()}")
            else:
                failure = (ConnectCode.PROTOCOL_ERROR,
                           f"{record.target} closed the connection during the link hello: "
                           "is it a pedserver? is the port right?")
        except RemoteProtocolError as exc:
            failure = (ConnectCode.PROTOCOL_ERROR,
                       f"{record.target} does not speak the Remote PED link protocol "
                       f"({type(exc).__name__}): is it a pedserver? is the port right?")
        except LinkClosed:
            failure = (ConnectCode.PROTOCOL_ERROR,
                       f"{record.target} closed the connection during the link hello")
        if failure is not None or welcome is None:
            assert failure is not None
            log.warning("link %d: %s", record.id, failure[1])
            await server.send_close_quietly(Close(CloseCode.PROTOCOL_ERROR, "hello failed"))
            await hsm.send_close_quietly(ConnectResult(failure[0], fit_text(failure[1])))
            return None
        record.server_name = welcome.server_name
        record.idle_timeout = welcome.idle_timeout
        result = ConnectResult(ConnectCode.OK, f"connected to {record.target}", welcome.version,
                               welcome.idle_timeout, welcome.server_name, welcome.device)
        record.doing = "idle"
        record.last_heard = trio.current_time()
        try:
            await hsm.send(result)
        except LinkClosed:
            log.info("link %d: the HSM left before its link was up", record.id)
            await server.send_close_quietly(Close(CloseCode.NORMAL, "HSM left"))
            return None
        log.info("link %d up: HSM %s -> pedserver %s at %s, link version %d, idle %d s, "
                 "PED %s", record.id, request.hsm_name or "unnamed", welcome.server_name,
                 record.target, welcome.version, welcome.idle_timeout,
                 "connected" if welcome.device.connected else "NOT connected")
        record.keepalive_interval = welcome.keepalive_interval
        return welcome

    async def _relay(self, record: ClientLink) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._hsm_to_server, record, nursery.cancel_scope)
            nursery.start_soon(self._server_to_hsm, record, nursery.cancel_scope)
            nursery.start_soon(self._keepalive, record, record.keepalive_interval)

    async def _hsm_to_server(self, record: ClientLink, scope: trio.CancelScope) -> None:
        hsm, server = record.hsm, record.server
        assert server is not None
        try:
            while True:
                try:
                    event = await hsm.receive()
                except RemoteProtocolError as exc:
                    record.end_reason = f"the HSM broke the protocol ({exc})"
                    await hsm.send_close_quietly(
                        Close(CloseCode.PROTOCOL_ERROR, fit_text(str(exc))))
                    return
                if isinstance(event, OpBegin):
                    record.doing = "waiting for the PED"
                    await server.send(event)
                elif isinstance(event, OpEnd):
                    record.doing = "idle"
                    await server.send(event)
                elif isinstance(event, EndToEnd):
                    await server.send(event)
                elif isinstance(event, Close):
                    record.end_reason = record.end_reason or "closed by the HSM"
                    await server.send_close_quietly(Close(CloseCode.NORMAL, event.text))
                    return
                elif isinstance(event, ConnectionLost):
                    # The HSM hangs up after pedserver's close too: keep the first reason.
                    record.end_reason = record.end_reason or "the HSM went away"
                    await server.send_close_quietly(Close(CloseCode.NORMAL, "HSM went away"))
                    return
        except LocalProtocolError:
            # pedserver closed the link while the HSM's frame was on its way: the other
            # relay task forwards pedserver's Close to the HSM and ends the link.
            await trio.sleep_forever()
        except LinkClosed:
            record.end_reason = record.end_reason or "lost the connection to pedserver"
            await hsm.send_close_quietly(Close(
                CloseCode.SERVER_GONE,
                f"the connection to pedserver at {record.target} was lost; retry"))
        finally:
            scope.cancel()

    async def _server_to_hsm(self, record: ClientLink, scope: trio.CancelScope) -> None:
        hsm, server = record.hsm, record.server
        assert server is not None
        read_timeout = self.settings.socket_read_rsp_timeout
        try:
            while True:
                try:
                    with trio.move_on_after(read_timeout) as timer:
                        event = await server.receive()
                except RemoteProtocolError as exc:
                    record.end_reason = f"pedserver broke the protocol ({exc})"
                    await server.send_close_quietly(
                        Close(CloseCode.PROTOCOL_ERROR, fit_text(str(exc))))
                    await hsm.send_close_quietly(Close(
                        CloseCode.PROTOCOL_ERROR,
                        f"pedserver at {record.target} sent an invalid frame; retry"))
                    return
                if timer.cancelled_caught:
                    record.end_reason = f"nothing heard from pedserver for {read_timeout} s"
                    await server.send_close_quietly(Close(CloseCode.PEER_UNRESPONSIVE,
                                                          record.end_reason))
                    await hsm.send_close_quietly(Close(
                        CloseCode.PEER_UNRESPONSIVE,
                        f"pedserver at {record.target} stopped answering for {read_timeout} s "
                        "(network loss?); retry"))
                    return
                record.last_heard = trio.current_time()
                if isinstance(event, Keepalive):
                    await server.send(KeepaliveAck(event.nonce))
                elif isinstance(event, KeepaliveAck):
                    pass
                elif isinstance(event, OpGranted | Busy):
                    if isinstance(event, OpGranted):
                        record.ops += 1
                        record.doing = "PED operation in progress"
                    else:
                        record.doing = "idle"
                    try:
                        await hsm.send(event)
                    except LocalProtocolError:
                        if hsm.state is LinkState.CLOSED:
                            raise  # the HSM's link is gone: handled below
                        # pedserver answered an OP_BEGIN nobody sent: its fault, not the
                        # HSM's, and the link's PED lock can no longer be trusted.
                        record.end_reason = (
                            f"pedserver sent {type(event).__name__} with no operation asked")
                        await server.send_close_quietly(Close(
                            CloseCode.PROTOCOL_ERROR, record.end_reason))
                        await hsm.send_close_quietly(Close(
                            CloseCode.PROTOCOL_ERROR,
                            f"pedserver at {record.target} broke the link protocol "
                            f"({record.end_reason}); retry"))
                        return
                elif isinstance(event, EndToEnd):
                    await hsm.send(event)
                elif isinstance(event, Close):
                    record.end_reason = (
                        f"pedserver closed it: {describe_close(event.code, event.text)}")
                    await hsm.send_close_quietly(Close(event.code, event.text))
                    return
                elif isinstance(event, ConnectionLost):
                    record.end_reason = "pedserver's connection was lost"
                    await hsm.send_close_quietly(Close(
                        CloseCode.SERVER_GONE,
                        f"the connection to pedserver at {record.target} was lost "
                        "(pedserver stopped or the network failed); retry"))
                    return
        except (LinkClosed, LocalProtocolError):
            # The HSM is gone (or its link already closed by the other relay task).
            record.end_reason = record.end_reason or "the HSM went away"
            await server.send_close_quietly(Close(CloseCode.NORMAL, "HSM went away"))
        finally:
            scope.cancel()

    async def _keepalive(self, record: ClientLink, interval: int) -> None:
        server = record.server
        assert server is not None
        for nonce in itertools.count(1):
            await trio.sleep(interval)
            try:
                await server.send(Keepalive(nonce & 0xFFFFFFFF))
            except (LinkClosed, PedError):
                return

    # ------------------------------------------------------------------ control

    def show(self) -> dict[str, Any]:
        s = self.settings
        return {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "since": round(self.started, 3),
            "socket": str(self.endpoint_path),
            "idle_timeout": s.idle_timeout,
            "socket_read_rsp_timeout": s.socket_read_rsp_timeout,
            "connect_timeout": s.connect_timeout,
            "max_links": s.max_links,
            "links": [r.describe() for r in sorted(self.links.values(), key=lambda r: r.id)],
        } | {k: v for extra in self.show_extras for k, v in extra().items()}

    async def _control(self, command: str, args: dict[str, Any], progress: Progress
                       ) -> dict[str, Any]:
        if command == "show":
            return self.show()
        if command == "stop":
            self.request_stop("mode stop")
            return {"stopping": True, "links": len(self.links)}
        raise ControlError(f"unknown command {command!r}; pedclient knows show and stop",
                           "bad-request")

