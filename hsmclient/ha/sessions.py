"""Virtual sessions of HA groups: which member serves a call, the session on it, failover.

Theory of operation
-------------------
A session on an HA group's slot is a **virtual session**: it opens a real session on a
member the first time that member must serve it (`HaSessions._member_session`), logged
in with the challenge the application gave C_Login on the virtual slot.  That challenge
is the group's Crypto Officer credential (every member has the same, a prerequisite
checked when it joined): Luna's HA login logs into every member with it, and so does
hsmclient, so that a member taking over mid-call can be logged in without asking the
application.  It is held in a ``bytearray`` per application and group, wiped at
C_Logout, when the application's last session on the group closes, or when the
application goes away; it is never logged nor in a repr.

`HaSessions._on_members` runs a call on the members in use, starting with the next in
turn (load balancing); when the member's connection drops (CKR_DEVICE_REMOVED, a session its
dropped connection took) the call is tried once more on the same member over a new
connection (pedhsm closes idle connections); when that fails too, or the member cannot
be reached (CKR_TOKEN_NOT_PRESENT), the member is marked down for the whole group and
the same call runs on the next member: the application sees an error only when no
member is left.  Object handles are virtual (`hsmclient.ha.handles`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import attrs

from hsmclient.ha.config import HaGroup, MemberRef
from hsmclient.ha.handles import KEY_TYPES, HandleMap, ObjectKey
from hsmclient.ha.replicate import FAILOVER
from hsmclient.remote import RemoteApplication
from ped.pkcs11.constants import CKR, CKU
from ped.pkcs11.token import Pkcs11Error

if TYPE_CHECKING:
    from hsmclient.ha.backend import HaBackend

T = TypeVar("T")


@attrs.define
class VirtualSession:
    """One application's session on an HA group's slot, and its sessions on members."""

    group: str
    slot_id: int
    read_write: bool
    members: dict[MemberRef, int] = attrs.Factory(dict)  # member -> our session on it


class HaSessions(RemoteApplication):
    """`RemoteApplication` with the HA groups' virtual sessions (see the module docstring)."""

    backend: HaBackend

    def __init__(self, backend: HaBackend) -> None:
        super().__init__(backend)
        self.virtual: dict[int, VirtualSession] = {}
        self.pins: dict[str, bytearray] = {}  # group -> the challenge this app logged in with
        self.user_types: dict[str, int] = {}  # group -> as whom (CKU_USER: the Crypto Officer)
        self.handles: dict[str, HandleMap] = {}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(sessions={len(self.virtual)}, "
                f"logged_in={sorted(self.pins)})")

    def _vs(self, session: int) -> VirtualSession:
        vs = self.virtual.get(session)
        if vs is None:
            raise Pkcs11Error(CKR.SESSION_HANDLE_INVALID, f"no session {session}")
        return vs

    def _forget_pin(self, label: str) -> None:
        pin = self.pins.pop(label, None)
        self.user_types.pop(label, None)
        if pin is not None:
            pin[:] = bytes(len(pin))

    def held_pin(self, label: str) -> bytearray | None:
        """A copy of the challenge this application logged into *label* with (caller wipes)."""
        pin = self.pins.get(label)
        if pin is None or self.user_types.get(label) != CKU.USER:
            return None  # cloning (replication, sync) needs the Crypto Officer
        return bytearray(pin)

    async def _member_session(self, vs: VirtualSession | None, ref: MemberRef) -> int:
        """Our session on *ref* for *vs*, opened (and logged in) now if needed."""
        if vs is not None:
            known = vs.members.get(ref)
            if known is not None and known in self.sessions:
                return known
        session = await super().open_session(self.backend.member_slot(ref), True)
        if vs is not None:
            vs.members[ref] = session
            pin = self.pins.get(vs.group)
            if pin is not None and (ref.server, ref.serial) not in self.logged_in:
                await super().login(session, self.user_types[vs.group], bytearray(pin))
        return session

    async def _on_member(
        self,
        label: str,
        vs: VirtualSession | None,
        ref: MemberRef,
        call: Callable[[MemberRef, int], Awaitable[T]],
        *,
        session: bool = True,
    ) -> T:
        """*call* on *ref*; a failed member is marked down and its error raised."""
        fresh = False
        while True:
            try:
                member_session = await self._member_session(vs, ref) if session else 0
                return await call(ref, member_session)
            except Pkcs11Error as exc:
                if exc.rv not in FAILOVER:
                    raise
                if vs is not None:
                    vs.members.pop(ref, None)
                if fresh or exc.rv == CKR.TOKEN_NOT_PRESENT:
                    self.backend.member_failed(label, ref, str(exc))
                    raise
                # A connection that dropped (pedhsm closes idle ones) is not yet a member
                # that died: the same member once more, on a new connection.
                fresh = True

    async def _on_members(
        self,
        group: HaGroup,
        vs: VirtualSession | None,
        call: Callable[[MemberRef, int], Awaitable[T]],
        *,
        session: bool = True,
    ) -> T:
        """*call* on the members in use in turn until one answers (failover)."""
        last: Pkcs11Error | None = None
        for ref in self.backend.state(group.label).order():
            try:
                return await self._on_member(group.label, vs, ref, call, session=session)
            except Pkcs11Error as exc:
                if exc.rv not in FAILOVER:
                    raise
                last = exc
        why = f" (last: {last})" if last is not None else ""
        raise Pkcs11Error(CKR.DEVICE_REMOVED if last else CKR.TOKEN_NOT_PRESENT,
                          f"HA group {group.label}: no member left in use{why}; see: "
                          "hsmclient hagroup listgroups")  # fmt: skip

    def member_gone(self, label: str, ref: MemberRef) -> None:
        """*ref* is out of use (`HaBackend.member_failed`): forget our sessions and handles
        on it (it may come back reset)."""
        for vs in self.virtual.values():
            if vs.group == label:
                vs.members.pop(ref, None)
        if label in self.handles:
            self.handles[label].forget_member(ref)

    async def _key_on(self, label: str, ref: MemberRef, session: int, virtual: int) -> int:
        """*ref*'s handle of the virtual object *virtual* (looked up by its key if new)."""
        hmap = self.handles[label]
        handle = hmap.on(virtual, ref)
        if handle is not None:
            return handle
        key = hmap.key(virtual)
        if key is None:
            raise Pkcs11Error(CKR.OBJECT_HANDLE_INVALID, f"no object {virtual} on this slot")
        found = await super().find_objects(session, key.template())
        if not found:
            raise Pkcs11Error(CKR.OBJECT_HANDLE_INVALID,
                              f"object {virtual} is not found on {ref} (private objects "
                              "need a login; a member that lacks it needs sync: hsmclient "
                              f"hagroup recover --group {label})")  # fmt: skip
        hmap.virtual(key, ref, found[0])
        return found[0]

    async def _object_key(self, session: int, handle: int) -> ObjectKey:
        return ObjectKey.from_results(await super().get_attributes(session, handle, KEY_TYPES))

    async def _virtual_handle(self, label: str, ref: MemberRef, session: int,
                              handle: int) -> int:  # fmt: skip
        hmap = self.handles[label]
        known = hmap.known(ref, handle)
        if known is not None:
            return known
        return hmap.virtual(await self._object_key(session, handle), ref, handle)

    def _group(self, vs: VirtualSession) -> HaGroup:
        return self.backend.config.group(vs.group)

    async def _keyed(self, session: int, key: int,
                     call: Callable[[int, int], Awaitable[T]]) -> T:  # fmt: skip
        """*call*(member session, member key handle) with failover."""
        vs = self._vs(session)

        async def run(ref: MemberRef, s: int) -> T:
            return await call(s, await self._key_on(vs.group, ref, s, key))

        return await self._on_members(self._group(vs), vs, run)
