"""What pedserver knows about each appliance it keeps a peer link to (``mode show``)."""

from __future__ import annotations

import enum
import time
from typing import Any

import attrs
import trio


@enum.unique
class ApplianceState(enum.Enum):
    """Where the keeper of one appliance is (``mode show`` prints `describe`)."""

    CONNECTING = "connecting"
    CONNECTED = "connected"  # a spare is parked, or links are in use
    RETRYING = "retrying"  # the last dial failed; backing off
    REFUSED = "refused"  # a certificate refusal (either end); retried every REJECT_RETRY
    RECONNECTING = "reconnecting"  # the parked spare was closed; dialling again
    DISCONNECTED = "disconnected"  # the keeper stopped (mode disconnect, or a failure)

    def describe(self) -> str:
        return self.value


@attrs.define(eq=False)
class ApplianceLink:
    """One appliance pedserver keeps a peer link to (shown by ``mode show``)."""

    name: str
    address: str = ""
    fingerprint: str = ""
    state: ApplianceState = ApplianceState.CONNECTING
    last_error: str = ""
    spare: bool = False
    in_use: int = 0
    since: float = attrs.field(factory=time.time)
    connected_since: float | None = None
    next_try: float | None = None  # wall clock
    scope: trio.CancelScope | None = None
    links_scope: trio.CancelScope | None = None
    first_outcome: trio.Event = attrs.field(factory=trio.Event)
    outcome_error: str = ""
    kick: trio.Event = attrs.field(factory=trio.Event)  # `mode connect` again: retry now

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "fingerprint": self.fingerprint,
            "state": self.state.describe(),
            "spare": self.spare,
            "links": self.in_use,
            "since": round(self.since, 3),
            "connected_since": (
                round(self.connected_since, 3) if self.connected_since is not None else None
            ),
            "next_try": round(self.next_try, 3) if self.next_try is not None else None,
            "last_error": self.last_error,
        }


def link_peer(record: ApplianceLink) -> str:
    """How links on this peer connection appear in ``mode show`` and the log."""
    return f"appliance {record.name} ({record.address})"


def format_address(ip: str, port: int) -> str:
    """An address as logs and ``mode show`` write it (IPv6 in brackets)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
