"""What pedclient knows about one HSM's link, its activity, and how ``mode show`` describes it."""

from __future__ import annotations

import enum
import time
from typing import Any

import attrs
import trio

from ped.link.stream import LinkStream


@enum.unique
class ClientLinkActivity(enum.Enum):
    """What an HSM's link is doing (``mode show`` prints `describe`)."""

    CONNECTING = "connecting"
    IDLE = "idle"
    # The HSM's OpBegin, or a frame of its operation, went to pedserver and nothing yet
    # shows it arrived there (no OpGranted/Busy, no frame of the PED, no keepalive answer
    # sent after it): during an outage the request is in the network, not at the PED.
    WAITING_FOR_PEDSERVER = "waiting for pedserver"
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
    last_heard: float = 0.0  # trio clock: anything from pedserver (0: not connected yet)
    keepalive_nonce: int = 0  # the last Keepalive sent to pedserver
    op_granted: bool = False  # pedserver granted the operation in progress
    # A KeepaliveAck with a nonce above this shows pedserver got what the HSM sent last
    # (TCP keeps order); None when nothing sent waits for such a sign.
    unconfirmed_after: int | None = None

    def request_sent(self) -> None:
        """The HSM's OpBegin or operation frame went to pedserver: wait for a sign of it."""
        self.doing = ClientLinkActivity.WAITING_FOR_PEDSERVER
        self.unconfirmed_after = self.keepalive_nonce

    def request_arrived(self) -> None:
        """Something from pedserver shows the request reached it."""
        self.unconfirmed_after = None
        if self.doing is ClientLinkActivity.WAITING_FOR_PEDSERVER and self.op_granted:
            self.doing = ClientLinkActivity.OPERATING

    def heard(self, nonce_acked: int | None = None) -> None:
        """Anything came from pedserver (*nonce_acked*: it answered our Keepalive)."""
        self.last_heard = trio.current_time()
        after = self.unconfirmed_after
        if nonce_acked is not None and after is not None and nonce_acked > after:
            self.request_arrived()

    def describe(self) -> dict[str, Any]:
        """What ``mode show`` prints: ``doing`` is the activity and the last word heard
        from pedserver ("idle (last heard from pedserver 3.2 s ago)"); ``activity`` and
        ``heard_ago`` (seconds, None before pedserver answered) are the same, apart."""
        heard = (
            round(max(0.0, trio.current_time() - self.last_heard), 1)
            if self.last_heard
            else None
        )
        doing = self.doing.describe()
        return {
            "id": self.id,
            "hsm": self.hsm_name,
            "target": self.target,
            "server": self.server_name,
            "since": round(self.opened, 3),
            "doing": doing if heard is None else f"{doing} (last heard from pedserver "
                                                 f"{heard:.1f} s ago)",
            "activity": doing,
            "heard_ago": heard,
            "operations": self.ops,
            "idle_timeout": self.idle_timeout,
        }
