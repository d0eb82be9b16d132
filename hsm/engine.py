"""The emulated HSM: roles, partitions, policies, failure counters, activation, RPV.

Theory of operation
-------------------
`Hsm` holds the durable state (`hsm.store`), the device key (`hsm.crypto.MasterKey`), the
audit log and, in memory only, what a powered HSM keeps in RAM: which roles are logged in
(with the keys they opened) and the activation cache.  A restart of the process is a power
cycle: RAM is gone, except auto-activated secrets, which are sealed on disk and come back
if the HSM was off for at most two hours.

A PED login goes like this (`_login`):

1. the role must exist and not be locked (a timed auditor lock that has run out unlocks);
2. the PED reads the key of the role's colour (`PedPort.read_secret`); a wrong colour, a
   PED that is gone, busy, timed out or cancelled raises and is **not counted**; a key of
   another keyset **is counted**;
3. the failure counter is incremented and **committed** before the secret is even tried
   (an interrupted attempt counts, as on a smart card: otherwise cutting the power after
   each guess would give unlimited guesses);
4. the secret (and the challenge, for an application login) derives the KEK that must
   unwrap the role key: success resets the counter, failure applies the threshold rule of
   `hsm.policy.outcome_of` in the same transaction, then the result is reported.

Commands are serialised by the daemon (one at a time, like the HSM's command processor),
so the engine needs no locking of its own.
"""

from __future__ import annotations

from hsm.admin import AdminCommands
from hsm.core import ATTEND, FIRMWARE, MODEL, PedAccess
from hsm.partitions import PartitionCommands

__all__ = ["ATTEND", "FIRMWARE", "MODEL", "Hsm", "PedAccess"]


class Hsm(AdminCommands, PartitionCommands):
    """The emulated HSM: `hsm.core.HsmCore` plus its commands (`hsm.admin`, `hsm.partitions`)."""
