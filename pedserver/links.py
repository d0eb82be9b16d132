"""What pedserver knows about one link: its record, its activity, and how ``mode show``
describes it."""

from __future__ import annotations

import enum
import time
from typing import Any

import attrs
import trio

from ped.link.connection import OpState
from ped.link.handoff import peer_address
from ped.link.stream import LinkStream
from ped.transport import FrameTransport


@enum.unique
class LinkActivity(enum.Enum):
    """What a link is doing (``mode show`` prints `describe`)."""

    HELLO = "hello"
    IDLE = "idle"
    WAITING_FOR_PED = "waiting for the PED"
    OPERATING = "PED operation in progress"
    # The PED finished the operation and its answer went to the link; nothing has come
    # back from the link since (during an outage the answer is in the network, not at
    # the PED).  The next frame from the link (OpEnd, a new request) ends this.
    ANSWERED = "answer sent, waiting for the link"
    CLOSING = "closing"

    def describe(self) -> str:
        return self.value


@enum.unique
class ChannelSeen(enum.Enum):
    """The link's end-to-end channel as a relay sees it (by frame types)."""

    NONE = "none"  # no RPV handshake answered by the PED (or its session ended)
    ANSWERED = "answered"  # the PED answered a handshake; no sealed answer from it since
    CONFIRMED = "confirmed"  # the PED sealed an answer: the HSM side holds the channel


@attrs.define(eq=False)
class LinkRecord:
    """What pedserver knows about one connection (shown by ``mode show``)."""

    id: int
    peer: str
    link: LinkStream
    opened: float = attrs.field(factory=time.time)
    client_name: str = ""
    version: int = 0
    idle_timeout: int = 0
    doing: LinkActivity = LinkActivity.HELLO
    ops: int = 0
    session: FrameTransport | None = None
    op_started: float | None = None
    last_activity: float = 0.0  # trio clock
    last_heard: float = 0.0  # trio clock
    scope: trio.CancelScope | None = None
    end_reason: str = ""
    idle_applies: bool = True  # False on peer-to-peer links (pedserver/peer.py)
    welcomed: float = 0.0  # trio clock
    # What pedserver can see of the end-to-end channel (frame types only, never content):
    handshakes: int = 0  # HANDSHAKE_RESPONSEs the PED sent on this link
    channel: ChannelSeen = ChannelSeen.NONE
    answered_at: float = 0.0  # wall clock of the PED's last HANDSHAKE_RESPONSE
    sent_in_hold: bool = False  # an end-to-end frame came from the link in this hold
    timers_changed: trio.Event = attrs.field(factory=trio.Event)

    def wake_timers(self) -> None:
        """A deadline moved (an operation began, or its first frame came)."""
        self.timers_changed.set()

    @property
    def holds_ped(self) -> bool:
        return self.link.connection.op_state is OpState.HELD

    @property
    def may_idle_out(self) -> bool:
        """Whether the idle timeout runs: never on a peer link, never while the link
        holds the PED or waits for it."""
        return (
            self.idle_applies
            and not self.holds_ped
            and self.doing is not LinkActivity.WAITING_FOR_PED
        )

    def heard_ago(self) -> float:
        """Seconds since anything came from the other end of the link (trio clock)."""
        return max(0.0, trio.current_time() - self.last_heard)

    def describe(self, hold_bound: int | None = None) -> dict[str, Any]:
        """What ``mode show`` prints: ``doing`` is the activity and the last word heard
        ("idle (last heard from pedclient 3.2 s ago)"), and while the link holds the PED
        for how long and its bound, *hold_bound* (`LinkDeadlines.hold_bound`: the link is
        closed there); ``activity``, ``heard_ago``, ``held_for`` and ``hold_bound``
        (seconds) are the same, apart, for programs."""
        heard = round(self.heard_ago(), 1)
        other = "pedclient" if self.idle_applies else "the peer"
        said = f"last heard from {other} {heard:.1f} s ago"
        held_for = None
        if hold_bound is not None and self.op_started is not None and self.holds_ped:
            held_for = max(0, int(trio.current_time() - self.op_started))
            said += f"; holds the PED for {held_for} s of at most {hold_bound} s"
        return {
            "id": self.id,
            "peer": self.peer,
            "client": self.client_name,
            "version": self.version,
            "idle_timeout": self.idle_timeout,
            "mode": "standard" if self.idle_applies else "peer-to-peer",
            "since": round(self.opened, 3),
            "doing": f"{self.doing.describe()} ({said})",
            "activity": self.doing.describe(),
            "heard_ago": heard,
            "held_for": held_for,
            "hold_bound": hold_bound if held_for is not None else None,
            "operations": self.ops,
        }


def source_of(peer: str) -> str:
    """The host part of a `peer_of` address ("[::1]:5000" -> "::1"): connections from one
    host share its per-source limits whatever their port."""
    if peer.startswith("["):
        return peer[1:].split("]", 1)[0]
    host, sep, _port = peer.rpartition(":")
    return host if sep else peer


def peer_of(stream: trio.abc.Stream) -> str:
    """The address of the other end of *stream*, as logs and ``mode show`` write it."""
    return peer_address(stream) or "local"
