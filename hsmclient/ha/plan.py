"""The replication plan, sans-IO: what to clone to and destroy on a member to sync it.

A member that comes back (or joins) is made equal to a **reference** member (one in use
all along): the reference's token objects it lacks are cloned to it, and the objects it
has that the reference does not (destroyed through the group meanwhile, or left by a
key generation its failure interrupted) are destroyed on it.  Objects are compared by
`ObjectKey` as multisets: two objects with one key are two objects.  Clones go in
batches (`BATCH`) so that each fits in one clone call.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import attrs

from hsmclient.ha.handles import ObjectKey

#: Objects per clone call (each call's objects must fit in one answer of pedhsm).
BATCH = 16

Inventory = Sequence[tuple[ObjectKey, int]]  # (key, the member's handle)


@attrs.frozen
class SyncPlan:
    """Reference handles to clone to the member, member handles to destroy on it."""

    clone: tuple[int, ...] = ()
    destroy: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.clone and not self.destroy

    def batches(self) -> list[tuple[int, ...]]:
        return [self.clone[i:i + BATCH] for i in range(0, len(self.clone), BATCH)]


def _by_key(inventory: Inventory) -> dict[ObjectKey, list[int]]:
    out: dict[ObjectKey, list[int]] = defaultdict(list)
    for key, handle in inventory:
        out[key].append(handle)
    return out


def sync_plan(reference: Inventory, member: Inventory) -> SyncPlan:
    """What makes *member*'s token objects equal to *reference*'s (see the docstring)."""
    ref, mine = _by_key(reference), _by_key(member)
    clone: list[int] = []
    destroy: list[int] = []
    for key in sorted(set(ref) | set(mine)):
        have, want = mine.get(key, []), ref.get(key, [])
        if len(want) > len(have):
            clone += want[len(have):]
        elif len(have) > len(want):
            destroy += have[len(want):]
    return SyncPlan(tuple(clone), tuple(destroy))
