"""What pedserver knows about one link: its record, its activity, and how ``mode show``
describes it."""

from __future__ import annotations

import enum
import time
from typing import Any

import attrs
import trio

from ped.link.connection import OpState
from ped.link.stream import LinkStream
from ped.transport import FrameTransport


@enum.unique
class LinkActivity(enum.Enum):
    """What a link is doing (``mode show`` prints `describe`)."""

    HELLO = "hello"
    IDLE = "idle"
    WAITING_FOR_PED = "waiting for the PED"
    OPERATING = "PED operation in progress"
    CLOSING = "closing"

    def describe(self) -> str:
        return self.value


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

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "peer": self.peer,
            "client": self.client_name,
            "version": self.version,
            "idle_timeout": self.idle_timeout,
            "mode": "standard" if self.idle_applies else "peer-to-peer",
            "since": round(self.opened, 3),
            "doing": self.doing.describe(),
            "operations": self.ops,
        }


def peer_of(stream: trio.abc.Stream) -> str:
    """The address of the other end of *stream*, as logs and ``mode show`` write it."""
    while isinstance(stream, trio.SSLStream):  # peer-to-peer mode: TLS over TCP
        stream = stream.transport_stream
    sock = getattr(stream, "socket", None)
    try:
        host, port = sock.getpeername()[:2]  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError, TypeError):
        return "local"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
