"""The link layer: pedclient <-> pedserver (0x01-0x1F) and HSM <-> pedclient (0x40-0x4F).

* `ped.link.messages`: frozen message classes, `encode`/`decode`.
* `ped.link.connection`: the sans-IO `LinkConnection` for either side of either hop.
* `ped.link.stream`: `LinkStream`, the thin trio shell the daemons use.
* `ped.link.hsm_side`: `connect_via_pedclient`, what an HSM calls.

See ARCHITECTURE.md and docs/protocol/link.md.
"""

from ped.link.connection import (
    LINK_TRANSITIONS,
    OP_TRANSITIONS,
    ConnectionLost,
    Hop,
    LinkConnection,
    LinkState,
    OpState,
    Side,
    Undelivered,
    negotiate_version,
    shorter_idle,
)
from ped.link.errors import (
    ConnectFailed,
    ConnectRejected,
    ConnectUnavailable,
    LinkClosed,
    describe_close,
)
from ped.link.hsm_side import (
    PEDCLIENT_SOCKET_NAME,
    PedclientTransport,
    connect_via_pedclient,
    default_pedclient_socket,
)
from ped.link.messages import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_PORT,
    LINK_VERSION_MAX,
    LINK_VERSION_MIN,
    MAX_OP_TIMEOUT,
    OP_TIMEOUT_VERSION,
    PIPELINE_VERSION,
    Busy,
    Close,
    ConnectCode,
    ConnectRequest,
    ConnectResult,
    DeviceSummary,
    EndToEnd,
    Keepalive,
    KeepaliveAck,
    LinkHello,
    LinkRefused,
    LinkType,
    LinkWelcome,
    LocalType,
    OpBegin,
    OpEnd,
    OpGranted,
    RefuseCode,
    decode,
    encode,
)
from ped.link.stream import LinkStream
from ped.wire.types import CloseCode

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_PORT",
    "LINK_TRANSITIONS",
    "LINK_VERSION_MAX",
    "LINK_VERSION_MIN",
    "MAX_OP_TIMEOUT",
    "OP_TIMEOUT_VERSION",
    "OP_TRANSITIONS",
    "PEDCLIENT_SOCKET_NAME",
    "PIPELINE_VERSION",
    "Busy",
    "Close",
    "CloseCode",
    "ConnectCode",
    "ConnectFailed",
    "ConnectRejected",
    "ConnectRequest",
    "ConnectResult",
    "ConnectUnavailable",
    "ConnectionLost",
    "DeviceSummary",
    "EndToEnd",
    "Hop",
    "Keepalive",
    "KeepaliveAck",
    "LinkClosed",
    "LinkConnection",
    "LinkHello",
    "LinkRefused",
    "LinkState",
    "LinkStream",
    "LinkType",
    "LinkWelcome",
    "LocalType",
    "OpBegin",
    "OpEnd",
    "OpGranted",
    "OpState",
    "PedclientTransport",
    "RefuseCode",
    "Side",
    "Undelivered",
    "connect_via_pedclient",
    "decode",
    "default_pedclient_socket",
    "describe_close",
    "encode",
    "negotiate_version",
    "shorter_idle",
]
