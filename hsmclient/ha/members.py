"""The members' states of one HA group, sans-IO: alive, down (since, why) or excluded.

Theory of operation
-------------------
A member is **alive** and in use, **down** (its server or connection failed: since when
and why are kept for ``hagroup listgroups``) or **excluded** (it can never take part as
it is: another cloning domain, a Crypto Officer that refuses the group's challenge).
An alive member may still **need sync**: it came back (or joined) and has not yet been
given the objects created and destroyed meanwhile; it serves no operation until it has.

Nothing brings a down member back by itself unless the group's retry count says so
(seed 003: "by default an HA group will not attempt to recover an HA member"): each poll
of the recovery loop `due` lists the down members with attempts left, and `attempted`
counts one.  `hagroup recover` ignores the count.  Operations are balanced over the
members in use by a rotating start (`order`); a call tries each in turn (failover).

The caller passes the time (``now``, wall-clock seconds) and does all I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import attrs

from hsmclient.ha.config import MemberRef


class MemberState(enum.Enum):
    ALIVE = "alive"
    DOWN = "down"
    EXCLUDED = "excluded"


@attrs.define
class MemberStatus:
    """One member's state, since when (wall clock) and why (empty while alive and synced)."""

    ref: MemberRef
    state: MemberState = MemberState.ALIVE
    since: float = 0.0
    why: str = ""
    needs_sync: bool = False
    attempts: int = 0  # automatic recovery attempts since it went down

    @property
    def in_use(self) -> bool:
        return self.state is MemberState.ALIVE and not self.needs_sync


class GroupState:
    """The runtime state of one group's members (see the module docstring)."""

    def __init__(self, members: Sequence[MemberRef], now: float) -> None:
        self.members: dict[MemberRef, MemberStatus] = {}
        self._turn = 0
        self.set_members(members, now)

    def __repr__(self) -> str:
        return f"GroupState({[(str(m), s.state.value) for m, s in self.members.items()]})"

    def set_members(self, members: Sequence[MemberRef], now: float) -> None:
        """The configured members; a new one needs sync, a known one keeps its state."""
        old = self.members
        self.members = {}
        for ref in members:
            self.members[ref] = old.get(ref) or MemberStatus(ref, since=now,
                                                             needs_sync=bool(old))  # fmt: skip

    def status(self, ref: MemberRef) -> MemberStatus:
        return self.members[ref]

    def in_use(self) -> list[MemberRef]:
        return [ref for ref, s in self.members.items() if s.in_use]

    def alive(self) -> list[MemberRef]:
        """The members in use and those waiting for a sync (new objects go to both, so
        that a sync in progress cannot miss one)."""
        return [ref for ref, s in self.members.items() if s.state is MemberState.ALIVE]

    def order(self) -> list[MemberRef]:
        """The members in use, starting at the next one in turn (load balancing)."""
        use = self.in_use()
        if not use:
            return []
        start = self._turn % len(use)
        self._turn += 1
        return use[start:] + use[:start]

    def failed(self, ref: MemberRef, why: str, now: float) -> bool:
        """*ref* failed; True if this took it out of use (it was in use)."""
        s = self.members.get(ref)
        if s is None or s.state is not MemberState.ALIVE:
            return False
        s.state, s.since, s.why, s.attempts = MemberState.DOWN, now, why, 0
        return True

    def excluded(self, ref: MemberRef, why: str, now: float) -> None:
        s = self.members.get(ref)
        if s is not None:
            s.state, s.since, s.why, s.needs_sync = MemberState.EXCLUDED, now, why, True

    def reachable(self, ref: MemberRef, now: float) -> None:
        """*ref* answers again: alive, but it needs sync before it serves."""
        s = self.members[ref]
        if s.state is not MemberState.ALIVE:
            s.since = now
        s.state, s.why, s.needs_sync = MemberState.ALIVE, "", True

    def synced(self, ref: MemberRef, now: float) -> None:
        s = self.members[ref]
        s.state, s.why, s.needs_sync, s.attempts = MemberState.ALIVE, "", False, 0
        s.since = s.since or now

    def waiting(self, ref: MemberRef, why: str) -> None:
        """Alive but not synced yet, and why (e.g. no Crypto Officer challenge held)."""
        self.members[ref].why = why

    def due(self, retry: int) -> list[MemberRef]:
        """Down members the recovery loop may try now (attempts left under *retry*)."""
        return [ref for ref, s in self.members.items()
                if s.state is MemberState.DOWN and s.attempts < retry]  # fmt: skip

    def attempted(self, ref: MemberRef) -> None:
        self.members[ref].attempts += 1

    def pending(self) -> list[MemberRef]:
        """Alive members waiting for a sync."""
        return [ref for ref, s in self.members.items()
                if s.state is MemberState.ALIVE and s.needs_sync]  # fmt: skip
