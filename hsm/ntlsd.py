"""pedhsm's client listener (NTLS, port 1792): pinned mutual TLS 1.3 around ``ped.ntls``.

Theory of operation
-------------------
A thin trio shell.  Every TCP connection runs the pinned handshake of ``ped.tls``
against the client registry (``PinStore(HOME/ntls, program="pedhsm")``, read afresh per
handshake, so ``client register``/``client delete`` apply to the next connection) with
the HSM's NTLS identity (``HOME/ntls/identity.pem``).  An unknown, deleted or expired
certificate is refused at the handshake with one WARNING line naming the fingerprint and
the command that fixes it; nothing else happens (no partition is looked at, so it is never
a counted login failure).

An accepted client gets its own `PartitionAccess` (``access_for(client_name)``, i.e.
``Hsm.client_access``) and a server-side `NtlsConnection`.  Requests of one PKCS#11
session are served in order by that session's worker task; different sessions, and the
session-less calls, proceed side by side.

Only the calls that may wait at the PED (cloning: a target reads its red key) take the
daemon's command lock; the rest never wait behind a shell command waiting for a person at
the PED.  Each is one step of the event loop (`hsm.access`); a shell command that awaited
the PED reads again what applications may have changed (`hsm.logins`, `hsm.changepw`).

Bounded: a handshake must finish within `HANDSHAKE_TIMEOUT`; a connection that sends
nothing for its idle timeout with no request in flight is closed (``Close(IDLE_TIMEOUT)``);
at most *max_connections* exist at once.  A new connection beyond that evicts the
quietest one: first a handshake still pending, else the established connection idle for
longest with nothing in flight; only when every connection is busy is the newcomer
turned away.  So any number of idle connections never keeps a working client out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import trio

from hsm.cloning import ConnectionClones
from ped.errors import LocalProtocolError, PedError, RemoteProtocolError
from ped.ntls import messages as m
from ped.ntls.connection import ConnectionLost, NtlsConnection, NtlsRole, choose_version
from ped.ntls.messages import MAX_IN_FLIGHT, NtlsCloseCode, NtlsRefuseCode, Op
from ped.pkcs11.constants import CKR
from ped.pkcs11.token import PartitionAccess, Pkcs11Error
from ped.tls import Identity, PinStore, TlsError, accept_pinned_tls, ensure_identity
from ped.tls.errors import PeerRejected
from ped.wire.framing import NEED_DATA

log = logging.getLogger("pedhsm.ntls")

NTLS_DIR = "ntls"
DEFAULT_NTLS_PORT = m.DEFAULT_NTLS_PORT
HANDSHAKE_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 3600.0
DEFAULT_MAX_CONNECTIONS = 256
_RECEIVE = 65536
#: The calls that may wait at the PED: they wait for the daemon's command lock.  Every
#: other call awaits nothing but the network (see the module docstring).
LOCKED_OPS = frozenset({Op.CLONE_OPEN, Op.CLONE_FRAME, Op.ARCHIVE})


def ntls_identity(home: Path, serial: str) -> Identity:
    """The HSM's NTLS identity (made on first use), what clients pin as a server."""
    return ensure_identity(home / NTLS_DIR, f"pedhsm {serial}")


def client_pins(home: Path) -> PinStore:
    """The registry of client certificates (``pedhsm client register``)."""
    return PinStore(home / NTLS_DIR, program="pedhsm")


@attrs.define(eq=False)
class ClientConnection:
    """One connection, as ``ntls show`` lists it and as eviction weighs it."""

    address: str
    opened: float = attrs.field(factory=time.time)
    last_activity: float = attrs.field(factory=trio.current_time)
    name: str | None = None  # None while the handshake runs
    fingerprint: str | None = None
    requests: int = 0
    busy: int = 0  # requests in flight
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)


class NtlsListener:
    """The listener and its connections (one per pedhsm daemon)."""

    def __init__(
        self,
        home: Path,
        serial: str,
        access_for: Callable[[str], PartitionAccess],
        command_lock: trio.Lock,
        *,
        port: int = DEFAULT_NTLS_PORT,
        host: str | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.home = home
        self.serial = serial
        self.access_for = access_for
        self.command_lock = command_lock
        self.port, self.host = port, host
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.identity = ntls_identity(home, serial)
        self.pins = client_pins(home)
        self.connections: list[ClientConnection] = []
        self.bound: list[tuple[str, int]] = []

    # ---- the listener ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[list[tuple[str, int]]]) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.bound = [tuple(ln.socket.getsockname()[:2]) for ln in listeners]
        for host, port in self.bound:
            log.info("NTLS listening on %s port %d (certificate %s)", host, port,
                     self.identity.fingerprint)  # fmt: skip
        task_status.started(self.bound)
        await trio.serve_listeners(self._one, listeners)

    def show(self) -> list[str]:
        """The lines of ``pedhsm ntls show``."""
        where = ", ".join(f"{h} port {p}" for h, p in self.bound) or "(not listening)"
        lines = [
            f"   NTLS listening on:   {where}",
            f"   NTLS certificate:    {self.identity.fingerprint}",
            f"   Connected clients:   {sum(1 for c in self.connections if c.name)}",
        ]
        for c in self.connections:
            if c.name:
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.opened))
                lines.append(f"     {c.name:<20} {c.address:<24} since {since}  "
                             f"{c.requests} requests")  # fmt: skip
        return lines

    def _admit(self, record: ClientConnection) -> bool:
        """Make room for *record*; False when every connection is busy."""
        if len(self.connections) >= self.max_connections:
            pending = [c for c in self.connections if c.name is None]
            idle = [c for c in self.connections if c.name is not None and not c.busy]
            victims = pending or sorted(idle, key=lambda c: c.last_activity)
            if not victims:
                return False
            victim = victims[0]
            who = victim.name or f"handshake from {victim.address}"
            log.info("NTLS: %d connections: closing the quietest (%s) for a new one",
                     len(self.connections), who)  # fmt: skip
            victim.scope.cancel()
            self.connections.remove(victim)
        self.connections.append(record)
        return True

    async def _one(self, tcp: trio.SocketStream) -> None:
        record = ClientConnection(_address(tcp))
        if not self._admit(record):
            log.warning("NTLS: refused a connection from %s: %d connections, all busy",
                        record.address, len(self.connections))  # fmt: skip
            await trio.aclose_forcefully(tcp)
            return
        try:
            with record.scope:
                try:
                    stream, name, fp = await accept_pinned_tls(
                        tcp, self.identity, self.pins, timeout=self.handshake_timeout,
                        peer_address=record.address,
                    )  # fmt: skip
                except PeerRejected as exc:
                    log.warning("NTLS: %s", exc)
                    return
                except TlsError as exc:
                    log.info("NTLS: %s", exc)
                    return
                record.name, record.fingerprint = name, fp
                record.last_activity = trio.current_time()
                log.info("NTLS: client %r (%s) connected from %s", name, fp, record.address)
                async with stream:
                    await self._serve(stream, record)
        finally:
            if record in self.connections:
                self.connections.remove(record)
            if record.name:
                log.info("NTLS: client %r from %s disconnected after %d requests",
                         record.name, record.address, record.requests)  # fmt: skip

    # ---- one client -----------------------------------------------------------------

    async def _serve(self, stream: trio.abc.Stream, record: ClientConnection) -> None:
        assert record.name is not None
        conn = NtlsConnection(NtlsRole.SERVER, max_in_flight=MAX_IN_FLIGHT)
        access = self.access_for(record.name)
        try:
            async with trio.open_nursery() as nursery:
                send_lock = trio.Lock()

                async def send(message: m.Message) -> None:
                    data = conn.send(message)
                    try:
                        async with send_lock:
                            await stream.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        nursery.cancel_scope.cancel()  # the client is gone
                    finally:
                        data[:] = bytes(len(data))

                await self._read_loop(stream, conn, record, access, send, nursery)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await access.close()
                except Exception:
                    log.exception("NTLS: closing client %r's sessions failed", record.name)

    async def _read_loop(
        self,
        stream: trio.abc.Stream,
        conn: NtlsConnection,
        record: ClientConnection,
        access: PartitionAccess,
        send: Callable[[m.Message], Awaitable[None]],
        nursery: trio.Nursery,
    ) -> None:
        """Read requests and hand each to its session's worker, until the connection ends."""
        workers: dict[object, trio.MemorySendChannel[m.Request]] = {}
        while True:
            try:
                event = await self._next_event(stream, conn, record)
            except RemoteProtocolError as exc:
                log.warning("NTLS: client %r broke the protocol (%s); connection closed",
                            record.name, exc)  # fmt: skip
                return
            if event is None or isinstance(event, ConnectionLost | m.Close):
                return
            record.last_activity = trio.current_time()
            if isinstance(event, m.Hello):
                version = choose_version(event)
                if version is None:
                    await send(m.Refused(NtlsRefuseCode.UNSUPPORTED_VERSION,
                        f"pedhsm speaks client protocol {m.NTLS_VERSION_MIN}-"
                        f"{m.NTLS_VERSION_MAX}: upgrade the older side"))  # fmt: skip
                    return
                await send(m.Welcome(version, MAX_IN_FLIGHT, self.serial))
                continue
            request: m.Request = event  # type: ignore[assignment]  # all else is a request
            record.requests += 1
            record.busy += 1
            key = _session_key(request)
            channel = workers.get(key)
            if channel is None:
                channel, receive = trio.open_memory_channel[m.Request](MAX_IN_FLIGHT)
                workers[key] = channel
                nursery.start_soon(self._worker, access, receive, send, record)
            channel.send_nowait(request)  # bounded: at most MAX_IN_FLIGHT are in flight
            if isinstance(request, m.CloseSession):
                channel.close()  # its worker ends after serving it
                del workers[key]

    async def _next_event(
        self, stream: trio.abc.Stream, conn: NtlsConnection, record: ClientConnection
    ) -> m.Message | ConnectionLost | None:
        """The next message, or None after an idle timeout (the client was told)."""
        while True:
            event = conn.next_event()
            if event is not NEED_DATA:
                return event
            deadline = record.last_activity + self.idle_timeout
            with trio.move_on_at(deadline) as scope:
                try:
                    data = await stream.receive_some(_RECEIVE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return ConnectionLost(clean=False)
            if scope.cancelled_caught:
                if record.busy:
                    record.last_activity = trio.current_time()
                    continue
                log.info("NTLS: client %r idle for %g s: closed", record.name, self.idle_timeout)
                try:
                    await stream.send_all(conn.send(m.Close(NtlsCloseCode.IDLE_TIMEOUT, "idle")))
                except (LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                return None
            conn.receive_data(data)

    async def _worker(
        self,
        access: PartitionAccess,
        requests: trio.MemoryReceiveChannel[m.Request],
        send: Callable[[m.Message], Awaitable[None]],
        record: ClientConnection,
    ) -> None:
        async with requests:
            async for request in requests:
                answer = await self._call(access, request, record)
                record.busy -= 1
                record.last_activity = trio.current_time()
                await send(answer)

    async def _call(
        self, access: PartitionAccess, request: m.Request, record: ClientConnection
    ) -> m.Answer:
        rid = request.request_id
        try:
            if request.OP in LOCKED_OPS:
                async with self.command_lock:
                    return await dispatch(access, request)
            return await dispatch(access, request)
        except Pkcs11Error as exc:
            text = str(exc).partition(": ")[2] or str(exc)
            return m.Failure(rid, exc.rv or CKR.GENERAL_ERROR, text[: m.MAX_TEXT])
        except PedError as exc:
            log.warning("NTLS: client %r: %s failed: %s", record.name, request.OP.name, exc)
            return m.Failure(rid, CKR.DEVICE_ERROR, "the HSM failed; see pedhsm's log")
        except Exception:
            log.exception("NTLS: client %r: %s failed", record.name, request.OP.name)
            return m.Failure(rid, CKR.GENERAL_ERROR, "internal error in pedhsm; see its log")
        finally:
            if isinstance(request, m.Login):
                request.pin[:] = bytes(len(request.pin))


async def dispatch(access: PartitionAccess, r: m.Request) -> m.Result:
    """Run request *r* on *access*; its result (a `Pkcs11Error` passes through)."""
    rid = r.request_id
    if isinstance(r, m.ListPartitions):
        return m.Partitions(rid, tuple(access.partitions()))
    if isinstance(r, m.GetTokenInfo):
        return m.TokenInfoResult(rid, await access.token_info(r.serial))
    if isinstance(r, m.GetMechanisms):
        return m.Mechanisms(rid, tuple(await access.mechanisms(r.serial)))
    if isinstance(r, m.OpenSession):
        return m.Handle(rid, r.OP, await access.open_session(r.serial, r.read_write))
    if isinstance(r, m.CloseSession):
        await access.close_session(r.session)
    elif isinstance(r, m.Login):
        await access.login(r.session, r.user_type, r.pin)
    elif isinstance(r, m.Logout):
        await access.logout(r.session)
    elif isinstance(r, m.GenerateKey):
        return m.Handle(rid, r.OP, await access.generate_key(r.session, r.mechanism, r.template))
    elif isinstance(r, m.GenerateKeyPair):
        pub, priv = await access.generate_key_pair(
            r.session, r.mechanism, r.public_template, r.private_template
        )
        return m.KeyPair(rid, pub, priv)
    elif isinstance(r, m.FindObjects):
        return m.Handles(rid, tuple(await access.find_objects(r.session, r.template)))
    elif isinstance(r, m.GetAttributes):
        results = await access.get_attributes(r.session, r.handle, r.types)
        return m.Attributes(rid, tuple(results))
    elif isinstance(r, m.DestroyObject):
        await access.destroy_object(r.session, r.handle)
    elif isinstance(r, m.Verify):
        await access.verify(r.session, r.mechanism, r.key, r.data, r.signature)
    elif isinstance(r, m.Sign):
        return m.Output(rid, r.OP, await access.sign(r.session, r.mechanism, r.key, r.data))
    elif isinstance(r, m.Encrypt):
        return m.Output(rid, r.OP, await access.encrypt(r.session, r.mechanism, r.key, r.data))
    elif isinstance(r, m.Decrypt):
        return m.Output(rid, r.OP, await access.decrypt(r.session, r.mechanism, r.key, r.data))
    elif isinstance(r, m.GenerateRandom):
        return m.Output(rid, r.OP, await access.generate_random(r.session, r.length))
    elif isinstance(r, m.CloneOpen | m.CloneFrame | m.Archive):
        return m.Output(rid, r.OP, await _clone(access, r))
    return m.Done(rid, r.OP)


async def _clone(access: PartitionAccess, r: m.CloneOpen | m.CloneFrame | m.Archive) -> bytes:
    """One end of a clone (`hsm.cloning`, `hsm.backup`): the frames hsmclient relays,
    never read here."""
    clones = getattr(access, "clones", None)
    if not isinstance(clones, ConnectionClones):
        raise Pkcs11Error(CKR.FUNCTION_NOT_SUPPORTED, "this HSM does not clone objects")
    if isinstance(r, m.CloneFrame):
        return await clones.feed(r.session, r.frames)
    if isinstance(r, m.Archive):
        return await clones.archive(r)
    source = r.role is m.CloneRole.SOURCE
    return clones.open(r.session, source=source, peer_serial=r.peer_serial, handles=r.handles)


def _session_key(request: m.Request) -> object:
    """Which worker serves *request*: its session's, or the session-less calls' one."""
    session = getattr(request, "session", None)
    return ("session", session) if session is not None else ("connection",)


def _address(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except (OSError, ValueError):
        return "a client"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
