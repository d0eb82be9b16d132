"""`HaBackend`: hsmclient's backend with the HA groups' virtual slots and their members' state.

Theory of operation
-------------------
`RemoteBackend` gives each application its member slots; `HaBackend` adds one slot per
HA group (its id from the same `SlotMap`, under the server name `HA_SERVER`, which no
registered server can carry) and keeps, daemon-wide, each group's `GroupState` (which
members are in use, down since when and why, excluded, needing sync).  The groups
themselves are `hsmclient.ha.config`'s file, re-read on `reload`.

A member that fails in any application's call is down for every application.  It comes
back through `recover` (``hagroup recover``) or, when the group's retry count allows,
through `run_recovery`, the daemon's loop polling every ``hagroup interval`` seconds.
Coming back means being synced (`hsmclient.ha.replicate.sync_member`), which needs the
group's Crypto Officer challenge: the one given to ``hagroup recover --password``, else
a copy of one held by an application logged in to the group.  With neither, a member
that answers again waits, "needs sync", and is synced at the next login to the group.
Syncs run one at a time (`_sync_lock`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import trio

from hsmclient.ha import config as ha_config
from hsmclient.ha.config import HaConfig, HaGroup, MemberRef
from hsmclient.ha.members import GroupState, MemberState
from hsmclient.ha.replicate import check_domain, sync_member
from hsmclient.ha.slot import HaApplication
from hsmclient.remote import RemoteBackend, SlotRow, partitions_of
from hsmclient.remote_link import LinkDown
from hsmclient.slots import SlotMap
from ped.pkcs11.token import Pkcs11Error
from ped.tls import PinStore

log = logging.getLogger("hsmclient.ha")

#: The slot map's server name for HA groups' virtual slots (not a valid server name).
HA_SERVER = "<hagroup>"


class HaBackend(RemoteBackend):
    """See the module docstring."""

    def __init__(self, home: Path, pins: PinStore, slot_map: SlotMap, **kwargs: Any) -> None:
        super().__init__(home, pins, slot_map, **kwargs)
        self.config = HaConfig()
        self._states: dict[str, GroupState] = {}
        self._sync_lock = trio.Lock()
        self._changed = trio.Event()  # set by `reload`: the recovery loop's wait restarts
        self.reload()

    async def connect(self) -> HaApplication:
        app = HaApplication(self)
        self.applications.add(app)
        return app

    # ---- configuration and state ---------------------------------------------------------

    def reload(self) -> None:
        """Re-read the groups; members keep their state, new ones need sync."""
        self.config = ha_config.load(self.home)
        now = time.time()
        states = {}
        for group in self.config.groups:
            state = self._states.get(group.label)
            if state is None:
                state = GroupState(group.members, now)
            else:
                state.set_members(group.members, now)
            states[group.label] = state
            self.slot_map.slot_for(HA_SERVER, group.label)
        for gone in set(self._states) - set(states):
            self.slot_map.retire(HA_SERVER, gone)
        self._states = states
        self._changed.set()

    def state(self, label: str) -> GroupState:
        return self._states[label]

    def states(self) -> dict[str, GroupState]:
        return dict(self._states)

    def group_slots(self) -> list[tuple[HaGroup, int]]:
        return [(g, self.slot_map.slot_for(HA_SERVER, g.label)) for g in self.config.groups]

    def group_at(self, slot_id: int) -> HaGroup | None:
        where = self.slot_map.where(slot_id)
        if where is None or where[0] != HA_SERVER or not self.config.has(where[1]):
            return None
        return self.config.group(where[1])

    def member_slot(self, ref: MemberRef) -> int:
        return self.slot_map.slot_for(ref.server, ref.serial)

    def member_failed(self, label: str, ref: MemberRef, why: str) -> None:
        """*ref* failed in some call: down for every application of the group."""
        if label in self._states and self._states[label].failed(ref, why, time.time()):
            log.warning("HA group %s: member %s (slot %d) is down: %s", label, ref,
                        self.member_slot(ref), why)  # fmt: skip
        for app in self.applications:
            if isinstance(app, HaApplication):
                app.member_gone(label, ref)

    def held_pin(self, label: str) -> bytearray | None:
        """A copy of the group's challenge from a logged-in application (caller wipes)."""
        for app in self.applications:
            if isinstance(app, HaApplication):
                pin = app.held_pin(label)
                if pin is not None:
                    return pin
        return None

    # ---- bringing members back -------------------------------------------------------------

    async def sync_pending(self, label: str, app: HaApplication | None = None) -> None:
        """Sync the members waiting for it, with *app*'s challenge (a login just given)."""
        state = self._states.get(label)
        if state is None or not state.pending():
            return
        pin = app.held_pin(label) if app is not None else self.held_pin(label)
        if pin is None:
            return
        try:
            for ref in state.pending():
                await self._sync(self.config.group(label), ref, pin)
        finally:
            pin[:] = bytes(len(pin))

    async def _sync(self, group: HaGroup, ref: MemberRef, pin: bytearray) -> str:
        async with self._sync_lock:
            said = await sync_member(self, group, ref, pin)
        log.info("HA group %s: %s", group.label, said)
        return said

    async def bring_back(self, group: HaGroup, ref: MemberRef,
                         pin: bytearray | None = None) -> str:  # fmt: skip
        """One attempt to bring *ref* back in use; what happened, in words."""
        held = bytearray(pin) if pin is not None else self.held_pin(group.label)
        self._failed.pop(ref.server, None)  # a deliberate attempt dials, however recent a failure
        try:
            if held is not None:
                return await self._sync(group, ref, held)
            return await self._reachable(group, ref)
        finally:
            if held is not None:
                held[:] = bytes(len(held))

    async def _reachable(self, group: HaGroup, ref: MemberRef) -> str:
        """Without a challenge: if *ref* answers, it waits (needs sync) for the next login."""
        state = self.state(group.label)
        try:
            link = await self.dial(ref.server)
            try:
                serials = [p.serial for p in await partitions_of(link)]
            finally:
                await link.aclose()
        except (LinkDown, Pkcs11Error) as exc:
            self.member_failed(group.label, ref, f"server unreachable: {exc}")
            return f"{ref} is still down: {exc}"
        if ref.serial not in serials:
            self.member_failed(group.label, ref, "the partition is not there (removed, or "
                               "not assigned to this client)")  # fmt: skip
            return f"{ref}: the partition is not there any more"
        state.reachable(ref, time.time())
        state.waiting(ref, "answers again; synced at the next login to the group (or give "
                      "hagroup recover --password)")  # fmt: skip
        return f"{ref} answers again; it needs sync (no Crypto Officer challenge held now)"

    async def recover(self, label: str, pin: bytearray | None = None) -> list[str]:
        """``hagroup recover``: every member out of use gets one attempt, whatever the
        retry count says."""
        group = self.config.group(label)
        state = self.state(label)
        out = []
        for ref in group.members:
            status = state.status(ref)
            if status.in_use:
                continue
            status.attempts = 0
            if status.state is MemberState.EXCLUDED:
                status.state = MemberState.DOWN
            out.append(await self.bring_back(group, ref, pin))
        return out or [f"every member of {label} is in use"]

    async def synchronize(self, label: str, pin: bytearray | None) -> list[str]:
        """``hagroup synchronize --enable``: check every member's cloning domain against
        a member in use (seed 003's warning for one that differs), then sync the members
        waiting for it."""
        group = self.config.group(label)
        state = self.state(label)
        held = bytearray(pin) if pin is not None else self.held_pin(label)
        if held is None:
            return [f"HA group {label}: the members' cloning domains are checked at the next "
                    "sync (no Crypto Officer challenge held now: give --password-file to "
                    "check them now)"]  # fmt: skip
        try:
            use = state.in_use()
            if not use:
                return [f"HA group {label}: no member in use to check the others against"]
            out = []
            for ref in group.members:
                if ref != use[0] and state.status(ref).state is not MemberState.DOWN:
                    problem = await check_domain(self, group, use[0], ref, held)
                    if problem is not None:
                        out.append(problem)
            for ref in state.pending():
                out.append(await self._sync(group, ref, held))
            return out or [f"HA group {label}: every member shares the cloning domain"]
        finally:
            held[:] = bytes(len(held))

    async def run_recovery(self) -> None:
        """The recovery loop: each interval, one attempt per down member with retries left."""
        while True:
            self._changed = trio.Event()
            with trio.move_on_after(self.config.interval):
                await self._changed.wait()  # a new interval or retry count applies at once
                continue
            for group in self.config.groups:
                if group.retry <= 0 or group.label not in self._states:
                    continue
                state = self._states[group.label]
                for ref in state.due(group.retry):
                    state.attempted(ref)
                    said = await self.bring_back(group, ref)
                    log.info("HA group %s: automatic recovery attempt %d of %d: %s",
                             group.label, state.status(ref).attempts, group.retry, said)
                await self.sync_pending(group.label)

    # ---- listing ---------------------------------------------------------------------------

    async def auto_activations(self) -> dict[MemberRef, bool | None]:
        """Each member's auto-activation as its HSM says now (None: it cannot say: a
        version-1 pedhsm, a server that does not answer, a partition not listed)."""
        out: dict[MemberRef, bool | None] = {}
        for server in sorted({ref.server for g in self.config.groups for ref in g.members}):
            try:
                listed = await self.listed(server)
            except (LinkDown, Pkcs11Error):
                listed = {}
            for group in self.config.groups:
                for ref in group.members:
                    if ref.server == server:
                        found = listed.get(ref.serial)
                        out[ref] = None if found is None else found.auto_activation
        return out

    async def slot_rows(self) -> list[SlotRow]:
        rows = await super().slot_rows()
        for group, slot_id in self.group_slots():
            used = len(self.state(group.label).in_use())
            rows.append(SlotRow(slot_id, "HA group", group.serial, group.label,
                                f"HA group: {used} of {len(group.members)} members in use"))
        return sorted(rows, key=lambda r: (r.slot_id < 0, r.slot_id, r.server))
