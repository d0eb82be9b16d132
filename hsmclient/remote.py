"""`RemoteBackend`: hsmclient's `Backend` over the client protocol to every registered pedhsm.

Theory of operation
-------------------
Each application (one p11-kit connection) gets a `RemoteApplication`, which opens its own
TLS connection to each server the first time it needs it (`ServerLink`), so pedhsm's
login state per connection is exactly the application's.  Slot ids come from
`hsmclient.slots.SlotMap` (stable across restarts); a slot leads to (server, partition
serial).  Session handles handed to the application are hsmclient's own (pedhsm's are
per connection, and two servers may hand out the same number); each maps to (server,
pedhsm's handle).

Failures an application can act on: a server that cannot be reached makes its known
slots "token not present" (and `RemoteBackend.slot_rows` says "server unreachable: WHY"
with the fix); a connection that drops ends the sessions on it: a call in progress gets
CKR_DEVICE_REMOVED, later calls on those sessions CKR_SESSION_HANDLE_INVALID, and the
next C_OpenSession dials again.  Nothing is retried behind the application's back: a
retried login could count twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import trio

from hsmclient.remote_link import DIAL_TIMEOUT, LinkDown, ServerLink
from hsmclient.slots import SlotMap
from ped.errors import LocalProtocolError
from ped.ntls import messages as m
from ped.ntls.values import MAX_PIN
from ped.pkcs11.constants import CKF, CKR, CKU
from ped.pkcs11.token import (
    CKS_RO_PUBLIC_SESSION,
    CKS_RO_USER_FUNCTIONS,
    CKS_RW_PUBLIC_SESSION,
    CKS_RW_USER_FUNCTIONS,
    Application,
    Attribute,
    AttributeResult,
    Mechanism,
    MechanismInfo,
    PartitionInfo,
    Pkcs11Error,
    SessionInfo,
    SlotInfo,
    TokenInfo,
)
from ped.tls import Identity, PinStore, ensure_identity
from ped.tls.cli import common_name


@attrs.frozen
class SlotRow:
    """One line of ``hsmclient slot list``: where a slot leads and its state in words."""

    slot_id: int
    server: str
    serial: str
    label: str
    state: str  # "ready", "not activated", "server unreachable: WHY", ...
    auto_activation: bool | None = None  # None: not known (a version-1 pedhsm, no answer)


@attrs.define
class _Session:
    slot_id: int
    server: str
    serial: str
    remote: int  # pedhsm's handle on that connection
    read_write: bool
    link: ServerLink


#: How long a server that could not be reached is not dialled again (seconds).
RETRY_AFTER = 5.0


class RemoteBackend:
    """hsmclient's `Backend`: a `RemoteApplication` per application connection."""

    def __init__(
        self,
        home: Path,
        pins: PinStore,
        slot_map: SlotMap,
        *,
        identity: Identity | None = None,
        dial_timeout: float = DIAL_TIMEOUT,
    ) -> None:
        self.home = Path(home)
        self.pins = pins
        self.slot_map = slot_map
        self.identity = identity or ensure_identity(self.home, common_name())
        self.dial_timeout = dial_timeout
        self.applications: set[RemoteApplication] = set()
        self._failed: dict[str, tuple[float, str]] = {}  # server -> (retry at, why)

    async def connect(self) -> RemoteApplication:
        app = RemoteApplication(self)
        self.applications.add(app)
        return app

    async def slot_rows(self) -> list[SlotRow]:
        """Every server's partitions for this client, and why a server shows none."""
        rows: list[SlotRow] = []
        for peer in self.pins.list():
            try:
                link = await self.dial(peer.name)
            except LinkDown as exc:
                state = f"server unreachable: {exc}"
                known = [e for e in self.slot_map.entries() if e.server == peer.name]
                rows += [SlotRow(e.slot_id, peer.name, e.serial, "", state) for e in known]
                if not known:
                    rows.append(SlotRow(-1, peer.name, "", "", state))
                continue
            try:
                parts = await partitions_of(link)
            except (LinkDown, Pkcs11Error) as exc:
                rows.append(SlotRow(-1, peer.name, "", "", f"server unreachable: {exc}"))
                continue
            finally:
                await link.aclose()
            for p in parts:
                slot = self.slot_map.slot_for(peer.name, p.serial)
                rows.append(SlotRow(slot, peer.name, p.serial, p.label, _state_words(p),
                                    auto_activation_of(link, p)))  # fmt: skip
        return sorted(rows, key=lambda r: (r.slot_id < 0, r.slot_id, r.server))

    async def listed(self, server: str) -> dict[str, ListedPartition]:
        """*server*'s partitions for this client by serial, dialled anew (`LinkDown` or
        `Pkcs11Error` when it cannot say)."""
        link = await self.dial(server)
        try:
            parts = await partitions_of(link)
        finally:
            await link.aclose()
        return {p.serial: ListedPartition(p, auto_activation_of(link, p)) for p in parts}

    async def dial(self, server: str) -> ServerLink:
        """A new link to *server*; a server that just failed fails again at once for
        `RETRY_AFTER` seconds (an application's C_GetSlotList must not wait on it each time)."""
        failed = self._failed.get(server)
        if failed is not None and trio.current_time() < failed[0]:
            raise LinkDown(failed[1])
        try:
            link = await ServerLink.open(
                server, self.identity, self.pins, timeout=self.dial_timeout
            )
        except LinkDown as exc:
            self._failed[server] = (trio.current_time() + RETRY_AFTER, str(exc))
            raise
        self._failed.pop(server, None)
        return link

    async def aclose(self) -> None:
        for app in list(self.applications):
            await app.close()


def _state_words(p: PartitionInfo) -> str:
    if not p.initialised:
        return "not initialized"
    return "ready" if p.activated else "not activated"


@attrs.frozen
class ListedPartition:
    """A partition as LIST_PARTITIONS gave it, and whether auto-activation is known."""

    info: PartitionInfo
    auto_activation: bool | None  # None: the server's protocol version cannot say


def auto_activation_of(link: ServerLink, p: PartitionInfo) -> bool | None:
    """Whether *p*'s role stays activated across restarts (partition policy 23), or None
    when *link*'s negotiated version (1) cannot carry it."""
    version = link.conn.version or m.NTLS_VERSION_MIN
    return p.auto_activation if version >= m.NTLS_VERSION_AUTO_ACTIVATION else None


async def partitions_of(link: ServerLink) -> Sequence[PartitionInfo]:
    result = await link.call(m.ListPartitions)
    assert isinstance(result, m.Partitions)
    return result.partitions


class RemoteApplication(Application):
    """One application's view of every registered server's partitions."""

    def __init__(self, backend: RemoteBackend) -> None:
        self.backend = backend
        self.links: dict[str, ServerLink] = {}
        self.sessions: dict[int, _Session] = {}
        self.logged_in: set[tuple[str, str]] = set()  # (server, serial) this app logged in
        self._next_session = 1

    # ---- links --------------------------------------------------------------------------

    async def _link(self, server: str) -> ServerLink:
        link = self.links.get(server)
        if link is not None and link.down is None:
            return link
        if link is not None:
            self._forget_link(server)
        link = await self.backend.dial(server)
        self.links[server] = link
        return link

    def _forget_link(self, server: str) -> None:
        """A link went down: its sessions and its login are gone with it."""
        self.links.pop(server, None)
        self.logged_in = {k for k in self.logged_in if k[0] != server}
        for handle in [h for h, s in self.sessions.items() if s.server == server]:
            del self.sessions[handle]

    def _where(self, slot_id: int) -> tuple[str, str]:
        where = self.backend.slot_map.where(slot_id)
        if where is None:
            raise Pkcs11Error(CKR.SLOT_ID_INVALID, f"no slot {slot_id}; see: hsmclient slot list")
        return where

    async def _slot_call(self, slot_id: int, build: m.RequestBuilder) -> m.Result:
        server, _serial = self._where(slot_id)
        try:
            link = await self._link(server)
        except LinkDown as exc:
            raise Pkcs11Error(
                CKR.TOKEN_NOT_PRESENT, f"server {server} unreachable: {exc}"
            ) from None
        return await self._call(link, build)

    async def _call(self, link: ServerLink, build: m.RequestBuilder) -> m.Result:
        try:
            return await link.call(build)
        except LinkDown as exc:
            self._forget_link(link.server)
            raise Pkcs11Error(CKR.DEVICE_REMOVED, str(exc)) from None
        except LocalProtocolError as exc:  # a value over the protocol's limits
            raise Pkcs11Error(CKR.ARGUMENTS_BAD, str(exc)) from None

    def _session(self, handle: int) -> _Session:
        s = self.sessions.get(handle)
        if s is None or s.link.down is not None:
            if s is not None:
                self._forget_link(s.server)
            raise Pkcs11Error(
                CKR.SESSION_HANDLE_INVALID,
                f"no session {handle} (closed, or its server connection dropped: open a new one)",
            )
        return s

    async def _session_call(self, handle: int, build: m.RequestBuilder) -> m.Result:
        return await self._call(self._session(handle).link, build)

    # ---- slots and tokens -------------------------------------------------------------------

    async def slots(self) -> Sequence[SlotInfo]:
        out: dict[int, SlotInfo] = {}
        for peer in self.backend.pins.list():
            try:
                parts = await partitions_of(await self._link(peer.name))
            except (LinkDown, Pkcs11Error) as exc:
                self._forget_link(peer.name)
                for e in self.backend.slot_map.entries():
                    if e.server == peer.name and not e.retired:
                        why = f"{peer.name} partition serial {e.serial} (unreachable: {exc})"
                        out[e.slot_id] = SlotInfo(e.slot_id, why[:64], False)
                continue
            for p in parts:
                slot = self.backend.slot_map.slot_for(peer.name, p.serial)
                text = f"{peer.name} partition {p.label} (serial {p.serial})"
                out[slot] = SlotInfo(slot, text[:64], True)
        return [out[k] for k in sorted(out)]

    async def token_info(self, slot_id: int) -> TokenInfo:
        _server, serial = self._where(slot_id)
        result = await self._slot_call(slot_id, lambda rid: m.GetTokenInfo(rid, serial))
        assert isinstance(result, m.TokenInfoResult)
        return result.info

    async def mechanisms(self, slot_id: int) -> Sequence[MechanismInfo]:
        _server, serial = self._where(slot_id)
        result = await self._slot_call(slot_id, lambda rid: m.GetMechanisms(rid, serial))
        assert isinstance(result, m.Mechanisms)
        return result.infos

    async def open_session(self, slot_id: int, read_write: bool) -> int:
        server, serial = self._where(slot_id)
        result = await self._slot_call(slot_id, lambda rid: m.OpenSession(rid, serial, read_write))
        assert isinstance(result, m.Handle)
        handle = self._next_session
        self._next_session += 1
        self.sessions[handle] = _Session(
            slot_id, server, serial, result.handle, read_write, self.links[server]
        )
        return handle

    async def session_info(self, session: int) -> SessionInfo:
        s = self._session(session)
        user = (s.server, s.serial) in self.logged_in
        if s.read_write:
            state = CKS_RW_USER_FUNCTIONS if user else CKS_RW_PUBLIC_SESSION
        else:
            state = CKS_RO_USER_FUNCTIONS if user else CKS_RO_PUBLIC_SESSION
        flags = CKF.SERIAL_SESSION | (CKF.RW_SESSION if s.read_write else 0)
        return SessionInfo(s.slot_id, state, int(flags))

    async def close_all_sessions(self, slot_id: int) -> None:
        for handle, s in list(self.sessions.items()):
            if s.slot_id == slot_id:
                try:
                    await self.close_session(handle)
                except Pkcs11Error:
                    pass

    async def close(self) -> None:
        for link in list(self.links.values()):
            await link.aclose()
        self.links.clear()
        self.sessions.clear()
        self.logged_in.clear()
        self.backend.applications.discard(self)

    # ---- session calls ----------------------------------------------------------------

    async def login(self, session: int, user_type: int, pin: bytearray) -> None:
        try:
            if len(pin) > MAX_PIN:
                raise Pkcs11Error(CKR.PIN_LEN_RANGE, f"a challenge is at most {MAX_PIN} bytes")
            s = self._session(session)
            remote = s.remote
            await self._session_call(session, lambda rid: m.Login(rid, remote, user_type, pin))
            if user_type in (CKU.USER, CKU.CRYPTO_USER):
                self.logged_in.add((s.server, s.serial))
        finally:
            pin[:] = bytes(len(pin))

    async def logout(self, session: int) -> None:
        s = self._session(session)
        await self._session_call(session, lambda rid: m.Logout(rid, s.remote))
        self.logged_in.discard((s.server, s.serial))

    async def close_session(self, session: int) -> None:
        s = self._session(session)
        try:
            await self._session_call(session, lambda rid: m.CloseSession(rid, s.remote))
        finally:
            self.sessions.pop(session, None)
            where = (s.server, s.serial)
            if not any((o.server, o.serial) == where for o in self.sessions.values()):
                self.logged_in.discard(where)  # pedhsm: the partition's last session logs out

    async def generate_key(
        self, session: int, mechanism: Mechanism, template: Sequence[Attribute]
    ) -> int:
        r = self._session(session).remote
        res = await self._session_call(
            session, lambda rid: m.GenerateKey(rid, r, mechanism, tuple(template))
        )
        assert isinstance(res, m.Handle)
        return res.handle

    async def generate_key_pair(
        self,
        session: int,
        mechanism: Mechanism,
        public_template: Sequence[Attribute],
        private_template: Sequence[Attribute],
    ) -> tuple[int, int]:
        r = self._session(session).remote
        res = await self._session_call(
            session,
            lambda rid: m.GenerateKeyPair(
                rid, r, mechanism, tuple(public_template), tuple(private_template)
            ),
        )
        assert isinstance(res, m.KeyPair)
        return res.public, res.private

    async def find_objects(self, session: int, template: Sequence[Attribute]) -> Sequence[int]:
        r = self._session(session).remote
        res = await self._session_call(session, lambda rid: m.FindObjects(rid, r, tuple(template)))
        assert isinstance(res, m.Handles)
        return res.handles

    async def get_attributes(
        self, session: int, handle: int, types: Sequence[int]
    ) -> Sequence[AttributeResult]:
        r = self._session(session).remote
        res = await self._session_call(
            session, lambda rid: m.GetAttributes(rid, r, handle, tuple(types))
        )
        assert isinstance(res, m.Attributes)
        return res.results

    async def destroy_object(self, session: int, handle: int) -> None:
        r = self._session(session).remote
        await self._session_call(session, lambda rid: m.DestroyObject(rid, r, handle))

    async def sign(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        r = self._session(session).remote
        return await self._output(session, lambda rid: m.Sign(rid, r, mechanism, key, data))

    async def verify(
        self, session: int, mechanism: Mechanism, key: int, data: bytes, signature: bytes
    ) -> None:
        r = self._session(session).remote
        await self._session_call(
            session, lambda rid: m.Verify(rid, r, mechanism, key, data, signature)
        )

    async def encrypt(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        r = self._session(session).remote
        return await self._output(session, lambda rid: m.Encrypt(rid, r, mechanism, key, data))

    async def decrypt(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        r = self._session(session).remote
        return await self._output(session, lambda rid: m.Decrypt(rid, r, mechanism, key, data))

    async def generate_random(self, session: int, length: int) -> bytes:
        r = self._session(session).remote
        return await self._output(session, lambda rid: m.GenerateRandom(rid, r, length))

    # ---- cloning (relayed by hsmclient.commands_clone, never read here) ------------------

    def session_serial(self, session: int) -> str:
        return self._session(session).serial

    async def clone_call(self, session: int, build: Callable[[int, int], m.Request]) -> bytes:
        """A cloning request built from (request id, pedhsm's session); its opaque frames."""
        remote = self._session(session).remote
        return await self._output(session, lambda rid: build(rid, remote))

    async def _output(self, session: int, build: m.RequestBuilder) -> bytes:
        res = await self._session_call(session, build)
        assert isinstance(res, m.Output)
        return res.data
