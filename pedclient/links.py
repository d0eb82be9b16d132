"""What pedclient knows about one HSM's link, its activity, and how ``mode show`` describes it."""

from __future__ import annotations

import enum
import time
from typing import Any

import attrs

from ped.link.stream import LinkStream


@enum.unique
class ClientLinkActivity(enum.Enum):
    """What an HSM's link is doing (``mode show`` prints `describe`)."""

    CONNECTING = "connecting"
    IDLE = "idle"
    WAITING_FOR_PED = "waiting for the PED"
    OPERATING = "PED operation in progress"

    def describe(self) -> str:
        return self.value


@attrs.define(eq=False)
class ClientLink:
    """One HSM's link (shown by ``mode show``)."""

    id: int
    hsm: LinkStream
    hsm_name: str = ""
    target: str = ""
    server: LinkStream | None = None
    server_name: str = ""
    opened: float = attrs.field(factory=time.time)
    doing: ClientLinkActivity = ClientLinkActivity.CONNECTING
    ops: int = 0
    idle_timeout: int = 0
    keepalive_interval: int = 30
    end_reason: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "hsm": self.hsm_name,
            "target": self.target,
            "server": self.server_name,
            "since": round(self.opened, 3),
            "doing": self.doing.describe(),
            "operations": self.ops,
            "idle_timeout": self.idle_timeout,
        }
