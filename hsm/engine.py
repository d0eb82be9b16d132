"""The emulated HSM's facade: `Hsm` = the core (`hsm.core`) plus its command groups.

The theory of operation (state, power cycle, how a PED login is counted) is at the top
of `hsm.core`; the commands live in `hsm.admin` and `hsm.partitions`.
"""

from __future__ import annotations

from hsm.admin import AdminCommands
from hsm.core import ATTEND, FIRMWARE, MODEL, PedAccess
from hsm.partitions import PartitionCommands

__all__ = ["ATTEND", "FIRMWARE", "MODEL", "Hsm", "PedAccess"]


class Hsm(AdminCommands, PartitionCommands):
    """The emulated HSM: `hsm.core.HsmCore` plus its commands (`hsm.admin`, `hsm.partitions`)."""
