"""pedserver's peer-to-peer links: pedserver dials the HSM host (pinned mutual TLS 1.3).

Theory of operation
-------------------
``pedserver mode connect --name N`` asks the running daemon (control socket) to keep a
link to appliance N, registered with ``pedserver appliance register``: its address and
pinned certificate.  For each such appliance a *keeper* task keeps exactly one **spare**
connection dialled (TCP, then `ped.tls.open_pinned_tls_client`, then TCP keepalives on):

    dial --ok--> spare (parked, silent) --first bytes--> in use: a link, served by
      ^                 |                                   PedServer.handle_connection
      |                 +--closed by pedclient / network--+     (the keeper dials the
      +------------------ wait (backoff) <----------------+      next spare at once)

pedclient cannot dial out (that is the point of this mode), so it cannot ask for a new
connection when an HSM wants a link: it takes a parked spare and speaks first (its
`LinkHello`, exactly as in standard mode, with pedclient the link initiator).  The keeper
sees the first bytes, hands the connection with those bytes to ``handle_connection``
and dials the next spare.  So each HSM link has its own TLS connection (no multiplexing,
no new framing), and there is always one ready for the next HSM.

The next spare is dialled once the new link has settled: when it has been quiet for
`REPLACE_QUIET` s (its hello and the HSM's opening RPV handshake are done) or has closed,
and at the latest `REPLACE_MAX` s after it was taken.  Dialled at once, the replacement's
TLS handshake (CPU in both daemons, on the same event loops) ran exactly when the HSM's
hello and RPV handshake did, and made a connect on a ready spare nearly twice as slow
as a standard-mode connect.  An HSM that asks for a link in that short window waits
for the spare (pedclient waits while links are in use); it never fails for it.

Failures: an unreachable host, a timeout or a failed handshake is retried with
exponential backoff (1 s doubling to 60 s, reset once a connection is used or has been
parked for a while); a certificate refusal (`PeerRejected`, either end) is retried every
`REJECT_RETRY` s, because the registries are re-read for every connection and someone
may run the fix meanwhile (``mode connect --name N`` again retries at once).  Every
failure is one log line (with the fix for refusals); the state, the fingerprint and the
last error are in ``pedserver mode show``.

Links on a peer connection are exempt from the idle timeout (``handle_connection(...,
idle_timeout=False)``); keepalives and the read-response timeout still apply.
``mode disconnect --name N`` closes the spare and every link of N (with a Close saying
why) and stops the keeper.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ped.daemon.control import ControlError, Progress
from ped.link.handoff import HandoffStream, enable_tcp_keepalive
from ped.tls import (
    Identity,
    PeerRejected,
    PinError,
    PinStore,
    TlsError,
    current_identity,
    ensure_identity,
    open_pinned_tls_client,
    peer_fingerprint,
)
from ped.tls.errors import CertificateError
from ped.wire.types import CloseCode
from pedserver.appliances import ApplianceLink, ApplianceState, format_address, link_peer

if TYPE_CHECKING:
    from pedserver.server import PedServer

log = logging.getLogger("pedserver.peer")

BACKOFF_MIN = 1.0
BACKOFF_MAX = 60.0
#: How long after a certificate refusal the keeper tries again.
REJECT_RETRY = 60.0
#: A spare that stayed parked this long counts as healthy (the backoff starts over).
HEALTHY_AFTER = 30.0
#: The next spare is dialled once the link that took the last one was quiet this long...
REPLACE_QUIET = 0.02
#: ...or this long after it was taken, whichever comes first.
REPLACE_MAX = 0.25
#: How long ``mode connect`` waits for the first outcome before answering.
CONNECT_ANSWER_WAIT = 20.0
RECEIVE_CHUNK = 65536


class PeerManager:
    """The peer links of one pedserver (``mode connect/disconnect``, ``mode show``)."""

    def __init__(
        self,
        server: PedServer,
        home: Path,
        *,
        handshake_timeout: float = 15.0,
        reject_retry: float = REJECT_RETRY,
        backoff: tuple[float, float] = (BACKOFF_MIN, BACKOFF_MAX),
    ) -> None:
        self.server = server
        self.home = Path(home)
        self.pins = PinStore(home, program="pedserver")
        self.handshake_timeout = handshake_timeout
        self.reject_retry = reject_retry
        self.backoff = backoff
        self.replace_quiet = REPLACE_QUIET
        self.replace_max = REPLACE_MAX
        self.appliances: dict[str, ApplianceLink] = {}
        self._nursery: trio.Nursery | None = None

    def install(self) -> None:
        """Plug into the server: control commands and ``mode show``."""
        self.server.extra_commands["connect"] = self._cmd_connect
        self.server.extra_commands["disconnect"] = self._cmd_disconnect
        self.server.show_extras.append(lambda: {"peer_links": self.show()})

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the keepers until cancelled."""
        try:
            identity = ensure_identity(self.home, self.server.settings.server_name)
            log.info("peer-to-peer identity %s", identity.fingerprint)
        except CertificateError as exc:  # standard mode still works without it
            log.warning("no usable peer-to-peer identity: %s", exc)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def show(self) -> list[dict[str, Any]]:
        return [a.describe() for a in sorted(self.appliances.values(), key=lambda a: a.name)]

    # ------------------------------------------------------------------ commands

    async def connect(self, name: str) -> ApplianceLink:
        """Start keeping a link to appliance *name* (idempotent); `PinError` if unknown."""
        if self._nursery is None:
            raise ControlError("pedserver is not ready for peer links yet; retry", "busy",
                               retriable=True)
        peer = self.pins.get(name)  # InvalidPeerName / UnknownName, with the fix
        existing = self.appliances.get(name)
        if existing is not None:
            if existing.state is not ApplianceState.CONNECTED:
                # The operator fixed something (registration, address) and asks again:
                # try now instead of at the next backoff, and report that attempt.
                existing.first_outcome = trio.Event()
                existing.outcome_error = ""
                existing.kick.set()
            return existing
        address = format_address(peer.ip or "", peer.port or 0)
        record = ApplianceLink(name, address, peer.fingerprint)
        self.appliances[name] = record
        self._nursery.start_soon(self._keeper, record)
        log.info("peer link to appliance %r (%s): started", name, record.address)
        return record

    async def disconnect(self, name: str) -> int:
        """Stop the link to *name*: its spare and every link on it; returns links closed."""
        record = self.appliances.pop(name, None)
        if record is None:
            raise ControlError(
                f"pedserver has no peer link to {name!r}; see: pedserver mode show",
                "not-found",
            )
        closing = [r for r in self.server.links.values() if r.peer == link_peer(record)]
        with trio.move_on_after(2.0):
            async with trio.open_nursery() as nursery:
                for link in closing:
                    nursery.start_soon(
                        self.server.close_link, link, CloseCode.NORMAL,
                        f"the peer link {name!r} was ended on the PED workstation "
                        "(pedserver mode disconnect)",
                    )
        for scope in (record.scope, record.links_scope):
            if scope is not None:
                scope.cancel()
        record.state = ApplianceState.DISCONNECTED
        log.info("peer link to appliance %r (%s): ended by mode disconnect; %d link(s) "
                 "closed", name, record.address, len(closing))
        return len(closing)

    async def _cmd_connect(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        name = _name_arg(args)
        try:
            record = await self.connect(name)
        except PinError as exc:
            raise ControlError(str(exc), "not-found") from None
        with trio.move_on_after(min(CONNECT_ANSWER_WAIT, self.handshake_timeout + 5)):
            await record.first_outcome.wait()
        return {**record.describe(), "error": record.outcome_error}

    async def _cmd_disconnect(self, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        name = _name_arg(args)
        closed = await self.disconnect(name)
        return {"name": name, "links_closed": closed}

    # ------------------------------------------------------------------ one appliance

    async def _keeper(self, record: ApplianceLink) -> None:
        with trio.CancelScope() as scope:
            record.scope = scope
            async with trio.open_nursery() as links:
                record.links_scope = links.cancel_scope
                try:
                    await self._keep(record, links)
                except Exception as exc:  # a bug here must not take pedserver down
                    log.error("peer link to appliance %r stopped: %s: %s", record.name,
                              type(exc).__name__, exc)
                    self._failed(record, f"internal error ({type(exc).__name__}); run "
                                 f"`pedserver mode connect --name {record.name}` again")
                finally:
                    record.spare = False
        if self.appliances.get(record.name) is record:  # stopped by an internal error
            del self.appliances[record.name]  # `mode connect` starts a new keeper
        record.state = ApplianceState.DISCONNECTED

    async def _keep(self, record: ApplianceLink, links: trio.Nursery) -> None:
        delay = self.backoff[0]
        last_logged = ""
        while True:
            try:
                stream, identity = await self._dial(record)
            except PeerRejected as exc:
                record.state = ApplianceState.REFUSED
                self._failed(record, str(exc))
                log.warning("peer link to appliance %r: %s; retrying in %g s", record.name,
                            exc, self.reject_retry)
                last_logged = ""
                await self._wait(record, self.reject_retry)
                continue
            except (TlsError, OSError) as exc:
                record.state = ApplianceState.RETRYING
                text = str(exc) or type(exc).__name__
                self._failed(record, text)
                # One line per new problem; the same problem again only at debug level.
                level = logging.WARNING if text != last_logged else logging.DEBUG
                log.log(level, "peer link to appliance %r: %s; retrying in %g s",
                        record.name, text, delay)
                last_logged = text
                await self._wait(record, delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            last_logged = ""
            parked_at = trio.current_time()
            record.state, record.spare, record.last_error = ApplianceState.CONNECTED, True, ""
            record.next_try = None
            if record.connected_since is None:
                record.connected_since = time.time()
                log.info("peer link to appliance %r (%s, %s) is up; our certificate %s",
                         record.name, record.address, record.fingerprint,
                         identity.fingerprint)
            if not record.first_outcome.is_set():
                record.first_outcome.set()
            try:
                first = await self._park(stream)
            except BaseException:  # mode disconnect, or pedserver stopping: hang up
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)
                raise
            record.spare = False
            if first and not self._still_pinned(record):
                log.warning("peer link to appliance %r: its certificate %s is no longer "
                            "registered under this name; hung up (see: pedserver appliance "
                            "list)", record.name, record.fingerprint)
                first = b""
            if first:
                delay = self.backoff[0]
                link = _WatchedStream(stream, prefix=first)
                links.start_soon(self._serve_link, record, link)
                await self._settle(link)
                continue
            await trio.aclose_forcefully(stream)
            healthy = trio.current_time() - parked_at >= HEALTHY_AFTER
            if healthy:
                delay = self.backoff[0]
            if record.in_use == 0:
                record.connected_since = None
            record.state = ApplianceState.RECONNECTING
            log.info("peer link to appliance %r: the connection was closed (pedclient "
                     "stopped, or the network failed); reconnecting in %g s", record.name,
                     delay)
            await self._wait(record, delay)
            if not healthy:
                delay = min(delay * 2, self.backoff[1])

    async def _dial(self, record: ApplianceLink) -> tuple[trio.SSLStream, Identity]:
        peer = self.pins.get(record.name)  # re-read: address or certificate may change
        record.address = format_address(peer.ip or "", peer.port or 0)
        record.fingerprint = peer.fingerprint
        record.state = ApplianceState.CONNECTING
        identity = current_identity(self.home, self.server.settings.server_name)
        stream = await open_pinned_tls_client(
            peer.ip or "", peer.port or 0, identity, self.pins,
            timeout=self.handshake_timeout, peer_name=record.name,
        )
        record.fingerprint = peer_fingerprint(stream)
        enable_tcp_keepalive(stream)
        return stream, identity

    def _still_pinned(self, record: ApplianceLink) -> bool:
        """Is the certificate this spare was accepted with still registered as *name*?"""
        try:
            peer = self.pins.snapshot().by_name(record.name)
        except PinError:
            return False
        return peer is not None and peer.fingerprint == record.fingerprint

    def _failed(self, record: ApplianceLink, text: str) -> None:
        record.last_error = text
        record.spare = False
        if record.in_use == 0:
            record.connected_since = None
        if not record.first_outcome.is_set():
            record.outcome_error = text
            record.first_outcome.set()

    async def _wait(self, record: ApplianceLink, seconds: float) -> None:
        record.next_try = time.time() + seconds
        with trio.move_on_after(seconds):
            await record.kick.wait()
        record.kick = trio.Event()
        record.next_try = None

    async def _settle(self, link: _WatchedStream) -> None:
        """Return once *link* (just taken) is quiet or closed, or after `replace_max`."""
        with trio.move_on_after(self.replace_max):
            while not link.closed:
                quiet_at = link.last + self.replace_quiet
                if trio.current_time() >= quiet_at:
                    return
                with trio.move_on_at(quiet_at):
                    await link.closing.wait()

    @staticmethod
    async def _park(stream: trio.SSLStream) -> bytes:
        """Wait, silent, until pedclient speaks (b"" when the connection ends first)."""
        try:
            return bytes(await stream.receive_some(RECEIVE_CHUNK))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    async def _serve_link(self, record: ApplianceLink, wrapped: _WatchedStream) -> None:
        record.in_use += 1
        try:
            await self.server.handle_connection(wrapped, link_peer(record), idle_timeout=False)
        except Exception as exc:  # one link never takes the keeper down
            log.error("peer link %r: connection handler failed: %s: %s", record.name,
                      type(exc).__name__, exc)
        finally:
            record.in_use -= 1
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(wrapped)


class _WatchedStream(HandoffStream):
    """A taken spare as its link uses it: when it last moved bytes, and whether it closed
    (what `PeerManager._settle` waits on before dialling the next spare)."""

    def __init__(self, stream: trio.abc.Stream, *, prefix: bytes) -> None:
        super().__init__(stream, prefix=prefix)
        self.last = trio.current_time()
        self.closing = trio.Event()

    @property
    def closed(self) -> bool:
        return self.closing.is_set()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.last = trio.current_time()
        await super().send_all(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await super().receive_some(max_bytes)
        except BaseException:
            self.closing.set()
            raise
        self.last = trio.current_time()
        if not data:
            self.closing.set()
        return data

    async def aclose(self) -> None:
        self.closing.set()
        await super().aclose()


def _name_arg(args: dict[str, Any]) -> str:
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise ControlError("give the appliance's name: --name NAME", "bad-request")
    return name
