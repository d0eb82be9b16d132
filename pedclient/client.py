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

Once up, a link is two one-way relays and a keepalive (`pedclient.relay`).  The daemon's
life cycle (control socket, links nursery, graceful stop) is
`ped.daemon.skeleton.DaemonSkeleton`'s.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
from pathlib import Path
from typing import Any, ClassVar

import trio

from ped.daemon.skeleton import DaemonSkeleton
from ped.daemon.sockets import (
    SocketPath,
    clear_stale_socket,
    listen_owner_only,
    remove_socket_file,
)
from ped.errors import PedError, RemoteProtocolError
from ped.link.connection import Hop, LinkConnection, Side
from ped.link.errors import LinkClosed
from ped.link.messages import (
    Close,
    ConnectCode,
    ConnectRequest,
    ConnectResult,
    LinkHello,
    LinkRefused,
    LinkWelcome,
    RefuseCode,
    fit_text,
)
from ped.link.stream import LinkStream
from ped.wire.types import CloseCode
from pedclient.dial import Dialer, DialError, tcp_dialer
from pedclient.links import ClientLink, ClientLinkActivity
from pedclient.relay import LinkRelay
from pedclient.settings import Settings

log = logging.getLogger("pedclient")


class ClientStartError(PedError):
    """pedclient cannot start; the message says why."""


class PedClient(DaemonSkeleton[ClientLink]):
    """The pedclient daemon; `serve` runs it until `request_stop`."""

    prog: ClassVar[str] = "pedclient"
    start_error: ClassVar[type[PedError]] = ClientStartError
    handler_failed: ClassVar[str] = "HSM connection handler failed"

    def __init__(
        self,
        settings: Settings,
        *,
        endpoint_path: Path,
        control_path: Path | None = None,
        dialer: Dialer = tcp_dialer,
        name: str | None = None,
    ) -> None:
        super().__init__(log, control_path=control_path)
        self.settings = settings
        self.endpoint_path = endpoint_path
        self.dialer = dialer
        self.name = (name or socket.gethostname())[:40]
        self.relay = LinkRelay(settings.socket_read_rsp_timeout)
        self._ids = itertools.count(1)

    def known_commands(self) -> str:
        return "show and stop"

    # ------------------------------------------------------------------ life cycle

    async def serve(
        self, *, task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve HSMs until `request_stop`; `ClientStartError` if it cannot start."""
        listener = await self._listen()
        try:
            await self.serve_on(
                [listener], task_status=task_status, started=self.endpoint_path,
                on_listening=lambda: log.info("listening for HSMs on %s", self.endpoint_path),
            )
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
            remove_socket_file(self.endpoint_path)
            log.info("stopped")

    async def _listen(self) -> trio.SocketListener:
        path = self.endpoint_path
        if len(os.fsencode(path)) > 100:
            raise ClientStartError(f"socket path {path} is too long; use a shorter --home")
        try:
            found = clear_stale_socket(path)
        except OSError as exc:
            raise ClientStartError(f"cannot check {path}: {exc.strerror or exc}") from None
        if found is SocketPath.NOT_A_SOCKET:
            raise ClientStartError(f"{path} exists and is not a socket; remove it")
        if found is SocketPath.LIVE:
            raise ClientStartError(f"another pedclient already listens on {path}")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            # The directory is 0700 too: owner-only either way.
            return await listen_owner_only(path)
        except OSError as exc:
            raise ClientStartError(f"cannot listen on {path}: {exc.strerror}") from None

    async def close_for_stop(self, link: ClientLink, text: str) -> None:
        await self._close_both(link, CloseCode.SHUTTING_DOWN, text)

    async def _close_both(self, record: ClientLink, code: CloseCode, text: str) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(record.hsm.send_close_quietly, Close(code, text))
            if record.server is not None:
                nursery.start_soon(record.server.send_close_quietly, Close(code, text))

    # ------------------------------------------------------------------ one HSM

    async def handle_connection(self, stream: trio.abc.Stream) -> None:
        """Serve one HSM connection on the local endpoint."""
        hsm = LinkStream(stream, LinkConnection(Hop.LOCAL, Side.RESPONDER))
        record = ClientLink(next(self._ids), hsm)
        request = await self._receive_request(record)
        if request is None:
            return
        record.hsm_name = request.hsm_name
        record.target = request.target
        refusal = None
        if self.stopping:
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
                await self.relay.run(record)
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
        record.doing = ClientLinkActivity.IDLE
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

    # ------------------------------------------------------------------ control

    def status(self) -> dict[str, Any]:
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
        }
