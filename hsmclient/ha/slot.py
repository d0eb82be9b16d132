"""`HaApplication`: one application's HA virtual slots, beside the member slots it also sees.

Theory of operation
-------------------
An HA group is one more slot (`HaBackend` gives its id) beside the member slots, whose
calls go to `RemoteApplication` unchanged.  A call on the group's slot runs on one member
(`hsmclient.ha.sessions`: in turn, failing over to the next when a member dies).  Key
generation runs on one member and the new token objects are cloned to every other
member alive before the call returns (`hsmclient.ha.replicate`); a member the clone
fails on is marked down (its connection) or excluded (another cloning domain) and is
synced when it comes back.  Objects without a CKA_ID get the group object id
(`hsmclient.ha.handles`); C_Login logs into every member in use with one challenge,
held for failover; C_DestroyObject destroys on every member in use (one down now is
synced when it comes back).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import attrs

from hsmclient.ha.config import MemberRef
from hsmclient.ha.handles import GROUP_ID_BYTES, HandleMap, with_group_id
from hsmclient.ha.replicate import FAILOVER, ReplicationFailed, member_problem, replicate
from hsmclient.ha.sessions import HaSessions, VirtualSession
from ped.pkcs11.constants import CKA, CKF, CKR, CKU
from ped.pkcs11.token import (
    CKS_RO_PUBLIC_SESSION,
    CKS_RO_USER_FUNCTIONS,
    CKS_RW_PUBLIC_SESSION,
    CKS_RW_USER_FUNCTIONS,
    Attribute,
    AttributeResult,
    Mechanism,
    MechanismInfo,
    Pkcs11Error,
    SessionInfo,
    SlotInfo,
    TokenInfo,
)


async def _nothing(_ref: MemberRef, _session: int) -> None:
    """A call that only needs the member's session (opened and logged in)."""


class HaApplication(HaSessions):
    """`RemoteApplication` plus the HA groups' virtual slots (see the module docstring)."""

    # ---- slots ---------------------------------------------------------------------------

    async def slots(self) -> Sequence[SlotInfo]:
        out = list(await super().slots())
        for group, slot_id in self.backend.group_slots():
            alive = len(self.backend.state(group.label).in_use())
            text = f"HA group {group.label} ({alive} of {len(group.members)} members in use)"
            out.append(SlotInfo(slot_id, text[:64], alive > 0))
        return sorted(out, key=lambda s: s.slot_id)

    async def token_info(self, slot_id: int) -> TokenInfo:
        group = self.backend.group_at(slot_id)
        if group is None:
            return await super().token_info(slot_id)
        info = await self._on_members(group, None, lambda ref, _s: super(
            HaApplication, self).token_info(self.backend.member_slot(ref)), session=False)
        return attrs.evolve(info, label=group.label, serial=group.serial,
                            model="pedhsm HA group")  # fmt: skip

    async def mechanisms(self, slot_id: int) -> Sequence[MechanismInfo]:
        group = self.backend.group_at(slot_id)
        if group is None:
            return await super().mechanisms(slot_id)
        return await self._on_members(group, None, lambda ref, _s: super(
            HaApplication, self).mechanisms(self.backend.member_slot(ref)), session=False)

    async def open_session(self, slot_id: int, read_write: bool) -> int:
        group = self.backend.group_at(slot_id)
        if group is None:
            return await super().open_session(slot_id, read_write)
        if not self.backend.state(group.label).in_use():
            raise Pkcs11Error(CKR.TOKEN_NOT_PRESENT, f"HA group {group.label}: no member is "
                              "in use; see: hsmclient hagroup listgroups")  # fmt: skip
        handle = self._next_session
        self._next_session += 1
        self.virtual[handle] = VirtualSession(group.label, slot_id, read_write)
        self.handles.setdefault(group.label, HandleMap())
        return handle

    async def session_info(self, session: int) -> SessionInfo:
        vs = self.virtual.get(session)
        if vs is None:
            return await super().session_info(session)
        user = vs.group in self.pins
        if vs.read_write:
            state = CKS_RW_USER_FUNCTIONS if user else CKS_RW_PUBLIC_SESSION
        else:
            state = CKS_RO_USER_FUNCTIONS if user else CKS_RO_PUBLIC_SESSION
        flags = CKF.SERIAL_SESSION | (CKF.RW_SESSION if vs.read_write else 0)
        return SessionInfo(vs.slot_id, state, int(flags))

    async def close_all_sessions(self, slot_id: int) -> None:
        if self.backend.group_at(slot_id) is None:
            await super().close_all_sessions(slot_id)
            return
        for handle in [h for h, vs in self.virtual.items() if vs.slot_id == slot_id]:
            await self.close_session(handle)

    async def close(self) -> None:
        for label in list(self.pins):
            self._forget_pin(label)
        self.virtual.clear()
        await super().close()

    # ---- session calls ----------------------------------------------------------------

    async def login(self, session: int, user_type: int, pin: bytearray) -> None:
        vs = self.virtual.get(session)
        if vs is None:
            await super().login(session, user_type, pin)
            return
        held = bytearray(pin)
        pin[:] = bytes(len(pin))
        try:
            if user_type not in (CKU.USER, CKU.CRYPTO_USER):
                raise Pkcs11Error(CKR.USER_TYPE_INVALID, "an HA group is used by its Crypto "
                                  "Officer (CKU_USER) or Crypto User only")  # fmt: skip
            group = self._group(vs)
            answered: list[MemberRef] = []

            async def first(ref: MemberRef, s: int) -> None:
                await super(HaApplication, self).login(s, user_type, bytearray(held))
                answered.append(ref)

            await self._on_members(group, vs, first)  # a wrong challenge fails here, once
        except BaseException:
            held[:] = bytes(len(held))
            raise
        self._forget_pin(vs.group)
        self.pins[vs.group] = held
        self.user_types[vs.group] = user_type
        for ref in self.backend.state(vs.group).in_use():  # Luna: log into every member
            try:
                await self._on_member(vs.group, vs, ref, _nothing)
            except Pkcs11Error as exc:
                if exc.rv not in FAILOVER:  # it refuses what the first member accepted
                    member_problem(self.backend, group, answered[0], ref, exc)
        await self.backend.sync_pending(vs.group, self)

    async def logout(self, session: int) -> None:
        vs = self.virtual.get(session)
        if vs is None:
            await super().logout(session)
            return
        if vs.group not in self.pins:
            raise Pkcs11Error(CKR.USER_NOT_LOGGED_IN, "not logged in to this HA group")
        self._forget_pin(vs.group)
        for other in self.virtual.values():
            if other.group != vs.group:
                continue
            for s in list(other.members.values()):
                try:
                    await super().logout(s)
                except Pkcs11Error:
                    pass  # already logged out through another session, or the member is gone

    async def close_session(self, session: int) -> None:
        vs = self.virtual.pop(session, None)
        if vs is None:
            await super().close_session(session)
            return
        for s in vs.members.values():
            try:
                await super().close_session(s)
            except Pkcs11Error:
                pass
        if not any(other.group == vs.group for other in self.virtual.values()):
            self._forget_pin(vs.group)  # the last session ends the login (PKCS#11)

    async def generate_key(
        self, session: int, mechanism: Mechanism, template: Sequence[Attribute]
    ) -> int:
        if session not in self.virtual:
            return await super().generate_key(session, mechanism, template)
        vs = self._vs(session)
        full = with_group_id(template, secrets.token_bytes(GROUP_ID_BYTES))

        async def make(ref: MemberRef, s: int) -> list[int]:
            return await self._made(vs, ref, s, [await super(HaApplication, self).generate_key(
                s, mechanism, full)])

        [handle] = await self._on_members(self._group(vs), vs, make)
        return handle

    async def generate_key_pair(
        self,
        session: int,
        mechanism: Mechanism,
        public_template: Sequence[Attribute],
        private_template: Sequence[Attribute],
    ) -> tuple[int, int]:
        if session not in self.virtual:
            return await super().generate_key_pair(session, mechanism, public_template,
                                                   private_template)  # fmt: skip
        vs = self._vs(session)
        group_id = secrets.token_bytes(GROUP_ID_BYTES)
        pub_t, priv_t = with_group_id(public_template, group_id), with_group_id(
            private_template, group_id)

        async def make(ref: MemberRef, s: int) -> list[int]:
            pair = await super(HaApplication, self).generate_key_pair(s, mechanism, pub_t,
                                                                      priv_t)  # fmt: skip
            return await self._made(vs, ref, s, list(pair))

        public, private = await self._on_members(self._group(vs), vs, make)
        return public, private

    async def _made(self, vs: VirtualSession, ref: MemberRef, session: int,
                    handles: list[int]) -> list[int]:  # fmt: skip
        """New objects on *ref*: replicated to the other members, given virtual handles."""
        group = self._group(vs)
        keys = [await self._object_key(session, h) for h in handles]
        token = [h for h in handles
                 if (await super(HaApplication, self).get_attributes(
                     session, h, [CKA.TOKEN]))[0].value is True]  # fmt: skip
        if token and group.synchronize:
            try:
                await replicate(self, self.backend, group, (ref, session), token,
                                lambda target: self._member_session(vs, target))
            except ReplicationFailed as exc:  # the source itself failed mid-way
                raise exc.cause from None
        hmap = self.handles[vs.group]
        return [hmap.virtual(k, ref, h) for k, h in zip(keys, handles, strict=True)]

    async def find_objects(self, session: int, template: Sequence[Attribute]) -> Sequence[int]:
        vs = self.virtual.get(session)
        if vs is None:
            return await super().find_objects(session, template)

        async def find(ref: MemberRef, s: int) -> list[int]:
            found = await super(HaApplication, self).find_objects(s, template)
            return [await self._virtual_handle(vs.group, ref, s, h) for h in found]

        return await self._on_members(self._group(vs), vs, find)

    async def get_attributes(
        self, session: int, handle: int, types: Sequence[int]
    ) -> Sequence[AttributeResult]:
        if session not in self.virtual:
            return await super().get_attributes(session, handle, types)
        return await self._keyed(session, handle, lambda s, h: super(
            HaApplication, self).get_attributes(s, h, types))

    async def destroy_object(self, session: int, handle: int) -> None:
        vs = self.virtual.get(session)
        if vs is None:
            await super().destroy_object(session, handle)
            return
        destroyed = 0
        async def destroy(ref: MemberRef, s: int) -> None:
            await super(HaApplication, self).destroy_object(
                s, await self._key_on(vs.group, ref, s, handle))

        for ref in self.backend.state(vs.group).in_use():
            try:
                await self._on_member(vs.group, vs, ref, destroy)
                destroyed += 1
            except Pkcs11Error as exc:  # a member down now is synced when it is back
                if exc.rv not in FAILOVER:
                    raise
        if not destroyed:
            raise Pkcs11Error(CKR.DEVICE_REMOVED, f"HA group {vs.group}: no member left in "
                              "use; see: hsmclient hagroup listgroups")  # fmt: skip
        self.handles[vs.group].forget(handle)

    async def sign(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        if session not in self.virtual:
            return await super().sign(session, mechanism, key, data)
        return await self._keyed(session, key, lambda s, h: super(
            HaApplication, self).sign(s, mechanism, h, data))

    async def verify(
        self, session: int, mechanism: Mechanism, key: int, data: bytes, signature: bytes
    ) -> None:
        if session not in self.virtual:
            await super().verify(session, mechanism, key, data, signature)
            return
        await self._keyed(session, key, lambda s, h: super(
            HaApplication, self).verify(s, mechanism, h, data, signature))

    async def encrypt(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        if session not in self.virtual:
            return await super().encrypt(session, mechanism, key, data)
        return await self._keyed(session, key, lambda s, h: super(
            HaApplication, self).encrypt(s, mechanism, h, data))

    async def decrypt(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        if session not in self.virtual:
            return await super().decrypt(session, mechanism, key, data)
        return await self._keyed(session, key, lambda s, h: super(
            HaApplication, self).decrypt(s, mechanism, h, data))

    async def generate_random(self, session: int, length: int) -> bytes:
        vs = self.virtual.get(session)
        if vs is None:
            return await super().generate_random(session, length)
        return await self._on_members(self._group(vs), vs, lambda _r, s: super(
            HaApplication, self).generate_random(s, length))
