"""Replication between an HA group's members: new objects to every member, and a member
brought back in sync; hsmclient relays the clones unread (`relay_clone`).

Theory of operation
-------------------
`replicate` runs inside a key generation on the virtual slot: the new token objects are
cloned from the member that made them to every other member alive (in use, or waiting
for a sync, which then finds them there), before the call returns.  `sync_member`
makes a member that came back (or joined) equal to a member in use all along
(`hsmclient.ha.plan.sync_plan`): it destroys what the reference no longer has and
clones what it lacks, and looks again until nothing is left (`SYNC_ROUNDS`).  Both
start each clone with the domain check of the cloning handshake, so a member of another
domain is refused before any object moves; it is then **excluded** with seed 003's
words ("conflicting settings for private key cloning") and the fix.  A member whose
connection fails is marked down.  Both need the Crypto Officer logged in on each
member: the group's challenge, held by a logged-in application.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from hsmclient.commands_clone import relay_clone
from hsmclient.ha.config import HaGroup, MemberRef
from hsmclient.ha.handles import KEY_TYPES, ObjectKey
from hsmclient.ha.plan import sync_plan
from hsmclient.remote import RemoteApplication
from ped.pkcs11.constants import CKA, CKR, CKU
from ped.pkcs11.token import Attribute, Pkcs11Error

if TYPE_CHECKING:
    from hsmclient.ha.backend import HaBackend

#: What a member's failure looks like to a call: its server or connection is gone.
FAILOVER = frozenset({CKR.DEVICE_REMOVED, CKR.TOKEN_NOT_PRESENT, CKR.SESSION_HANDLE_INVALID,
                      CKR.DEVICE_ERROR})  # fmt: skip
#: Rounds of a sync at most: objects made through the group while a member is synced go
#: to the members in use only, so the sync looks again until nothing is left to do.
SYNC_ROUNDS = 3
#: What pedhsm says when the clone's domains differ (`ped.cloning.errors`).
DOMAIN_MISMATCH = "different cloning domains"


class ReplicationFailed(Exception):
    """The member holding the new objects failed while they were cloned from it."""

    def __init__(self, cause: Pkcs11Error) -> None:
        super().__init__(str(cause))
        self.cause = cause


def conflicting(backend: HaBackend, reference: MemberRef, member: MemberRef,
                detail: str) -> str:  # fmt: skip
    """Seed 003's warning, with the slots, the domains' fingerprints and the fix."""
    slots = backend.member_slot(reference), backend.member_slot(member)
    return (f"Warning: Synchronize may fail. The members in slot {slots[0]} and slot "
            f"{slots[1]} have conflicting settings for private key cloning ({detail}); "
            f"{member} takes no part in replication: add a partition of the group's domain "
            "(pedhsm partition init --domain-from-red-key, reading the group's red key) "
            "and remove this one (hsmclient hagroup removemember)")  # fmt: skip


def domains_named(message: str) -> str:
    """The fingerprints pedhsm's refusal names (never a secret), or the refusal itself."""
    at = message.find("this partition's domain")
    return message[at:].split(";")[0].rstrip(")") if at >= 0 else message


async def replicate(app: RemoteApplication, backend: HaBackend, group: HaGroup,
                    origin: tuple[MemberRef, int], handles: Sequence[int],
                    open_member: Callable[[MemberRef], Awaitable[int]]) -> None:  # fmt: skip
    """Clone *handles* from *source* (member, our session on it) to every other member in
    use, whose sessions *open_member* gives (see the module docstring)."""
    source, source_session = origin
    for target in backend.state(group.label).alive():
        if target == source:
            continue
        try:
            target_session = await open_member(target)
            await relay_clone(app, source_session, target_session, handles)
        except Pkcs11Error as exc:
            if source_session not in app.sessions:  # the source's connection went down
                raise ReplicationFailed(exc) from None
            member_problem(backend, group, source, target, exc)


def member_problem(backend: HaBackend, group: HaGroup, reference: MemberRef,
                   member: MemberRef, exc: Pkcs11Error) -> None:  # fmt: skip
    """*member* failed a call *reference* did not: excluded when it can never work as it
    is (another domain, another challenge), else down."""
    now = time.time()
    if DOMAIN_MISMATCH in str(exc):
        backend.state(group.label).excluded(
            member, conflicting(backend, reference, member, domains_named(str(exc))), now)
    elif exc.rv == CKR.PIN_INCORRECT:
        backend.state(group.label).excluded(
            member, f"its Crypto Officer refuses the group's challenge (every member needs "
            f"the same credentials): {exc}", now)
    else:
        backend.member_failed(group.label, member, str(exc))


async def _inventory(app: RemoteApplication, session: int) -> list[tuple[ObjectKey, int]]:
    out = []
    for handle in await app.find_objects(session, [Attribute(CKA.TOKEN, True)]):
        key = ObjectKey.from_results(await app.get_attributes(session, handle, KEY_TYPES))
        out.append((key, handle))
    return out


async def _logged_in(app: RemoteApplication, slot: int, pin: bytearray) -> int:
    session = await app.open_session(slot, True)
    await app.login(session, CKU.USER, bytearray(pin))
    return session


async def check_domain(backend: HaBackend, group: HaGroup, reference: MemberRef,
                       member: MemberRef, pin: bytearray) -> str | None:  # fmt: skip
    """The cloning handshake between *reference* and *member* (no object moves): None
    when they share the domain, else what is wrong (the member is then excluded)."""
    app = RemoteApplication(backend)
    try:
        source = await _logged_in(app, backend.member_slot(reference), pin)
        target = await _logged_in(app, backend.member_slot(member), pin)
        await relay_clone(app, source, target, [])
        return None
    except Pkcs11Error as exc:
        if exc.rv in FAILOVER:
            return f"{member} cannot be checked now: {exc}"
        member_problem(backend, group, reference, member, exc)
        return backend.state(group.label).status(member).why or str(exc)
    finally:
        await app.close()


async def sync_member(backend: HaBackend, group: HaGroup, member: MemberRef,
                      pin: bytearray) -> str:  # fmt: skip
    """Bring *member* in sync with a member in use (see the docstring); what was done."""
    state = backend.state(group.label)
    reference = next((r for r in state.in_use() if r != member), None)
    app = RemoteApplication(backend)
    try:
        try:
            target = await _logged_in(app, backend.member_slot(member), pin)
        except Pkcs11Error as exc:
            if exc.rv in FAILOVER:
                backend.member_failed(group.label, member, str(exc))
                return f"{member} is still down: {exc}"
            member_problem(backend, group, reference or member, member, exc)
            return state.status(member).why
        if reference is None or not group.synchronize:
            state.synced(member, time.time())
            return f"{member} is back in use (no other member to sync it from)" if (
                reference is None) else f"{member} is back in use (synchronize is off)"
        source = await _logged_in(app, backend.member_slot(reference), pin)
        try:
            await relay_clone(app, source, target, [])  # the domain check, nothing moves
            cloned = destroyed = 0
            for _ in range(SYNC_ROUNDS):  # a key made meanwhile is caught by the next round
                plan = sync_plan(await _inventory(app, source), await _inventory(app, target))
                if plan.empty:
                    break
                for handle in plan.destroy:
                    await app.destroy_object(target, handle)
                for batch in plan.batches():
                    await relay_clone(app, source, target, batch)
                cloned, destroyed = cloned + len(plan.clone), destroyed + len(plan.destroy)
        except Pkcs11Error as exc:
            if source not in app.sessions:
                backend.member_failed(group.label, reference, str(exc))
                return f"the reference member {reference} failed: {exc}"
            member_problem(backend, group, reference, member, exc)
            return state.status(member).why
        state.synced(member, time.time())
        return (f"{member} is back in use: {cloned} objects cloned to it, "
                f"{destroyed} destroyed on it")  # fmt: skip
    finally:
        await app.close()
