"""The integrator's API: everything an HSM needs to use a PED, local or remote, in one import.

    from ped import hsm_api

    transport = await hsm_api.connect_via_pedclient(socket_path, host, port)
    try:
        async with hsm_api.open_ped_session(transport, rpv=rpv, hsm_serial="123456") as ped:
            with await ped.read_secret(hsm_api.Color.BLUE, keyset_id, label="HSM SO") as result:
                secret = bytearray(result.secret)  # the result is wiped when the block ends
    finally:
        await transport.aclose()

docs/integrating.md is the guide: every parameter with its unit, default and limit, what
each error means for a login count, and a worked example that runs as a test.

What is here (``__all__``):

* the session: `open_ped_session`, `PedSession`, the defaults of its timing parameters
  (``DEFAULT_*``, ``MAX_KEY_TIMEOUT``; `ped.hsm_api.limits`);
* what it hands out: `Color` (which key), `ReadResult`, `ImprintResult` (the caller's
  to wipe: context managers, `ped.hsm_api.results`), `PedInfo`, `Notice` and
  `NoticeKind` (progress given to *on_notice*);
* transports (the caller opens and closes them): the `FrameTransport` protocol and its
  `Frame`; a remote PED through pedclient (`connect_via_pedclient`,
  `PedclientTransport`, `default_pedclient_socket`, ``DEFAULT_PORT``); a PED cabled to
  the HSM (`open_driver`, `PedDriver`, `DeviceInfo`, used with ``LOCAL_RPV``);
* errors, all `PedError`s:

  - the handshake: `RpvMismatch` (wrong orange key), `HandshakeRefused` (with a
    `RefuseReason`), both `HandshakeFailed`;
  - an operation: `OperationError` (``code`` an `ErrorCode`, ``retriable``) and its kinds
    `WrongColor`, `KeysetMismatch`, `KeyTimeout`, `OperationCancelled`, `NoBlankKey`,
    `PedFault`, `BadRequest`, `Unsupported`, `OperationTimeout`;
  - the path: `TransportError` (retriable, never a counted failed login) and its kinds
    `TransportClosed`, `PedBusy`, `SessionBroken`, `ConnectUnavailable`, `LinkClosed`
    (``code`` a `ConnectCode` / `CloseCode`), `DeviceGone`; `ConnectFailed` (what
    `connect_via_pedclient` raises) is a `ConnectUnavailable` or a `ConnectRejected`, the
    latter not retriable and not a `TransportError` (a bad request, an incompatible
    pedserver); a cabled PED's driver: `BadDeviceUri`, `DeviceNotFound`,
    `DeviceAccessDenied`, `DeviceNotOpen`;
  - misuse and misbehaviour: `LocalProtocolError` (a bad argument or call: a bug on the
    HSM side), `RemoteProtocolError` (the peer sent something invalid; the session is
    finished), of which `DecryptFailed` (a sealed frame did not authenticate);
* after a failed operation, `session_end` (a `SessionEnd`, or None while the session can
  still be used): why a session is finished, in an operator's words, for an HSM that
  keeps one open between operations and must say at once that it died.

The session core (`ped.hsm_api.session`, `ped.hsm_api.limits`, `ped.hsm_api.results`)
knows only `ped.transport`, `ped.channel` and `ped.ops`; this module adds the transports.
"""

from keys.colors import Color
from ped.channel import LOCAL_RPV, RPV_SIZE, PedInfo, RefuseReason
from ped.channel.errors import DecryptFailed, HandshakeFailed, HandshakeRefused, RpvMismatch
from ped.device import (
    BadDeviceUri,
    DeviceAccessDenied,
    DeviceGone,
    DeviceInfo,
    DeviceNotFound,
    DeviceNotOpen,
    PedDriver,
    open_driver,
)
from ped.errors import LocalProtocolError, PedError, RemoteProtocolError
from ped.hsm_api.limits import (
    DEFAULT_BUSY_WAIT,
    DEFAULT_CANCEL_GRACE,
    DEFAULT_KEY_TIMEOUT,
    DEFAULT_OP_TIMEOUT,
    MAX_KEY_TIMEOUT,
)
from ped.hsm_api.results import ImprintResult, ReadResult
from ped.hsm_api.session import PedSession, SessionBroken, open_ped_session
from ped.hsm_api.session_end import SessionEnd, session_end
from ped.link.errors import ConnectFailed, ConnectRejected, ConnectUnavailable, LinkClosed
from ped.link.hsm_side import PedclientTransport, connect_via_pedclient, default_pedclient_socket
from ped.link.messages import DEFAULT_PORT, ConnectCode
from ped.ops.errors import (
    BadRequest,
    ErrorCode,
    KeysetMismatch,
    KeyTimeout,
    NoBlankKey,
    OperationCancelled,
    OperationError,
    OperationTimeout,
    PedFault,
    Unsupported,
    WrongColor,
)
from ped.ops.messages import Notice, NoticeKind
from ped.transport import FrameTransport, PedBusy, TransportClosed, TransportError
from ped.wire.framing import Frame
from ped.wire.types import CloseCode

__all__ = [
    "DEFAULT_BUSY_WAIT",
    "DEFAULT_CANCEL_GRACE",
    "DEFAULT_KEY_TIMEOUT",
    "DEFAULT_OP_TIMEOUT",
    "DEFAULT_PORT",
    "LOCAL_RPV",
    "MAX_KEY_TIMEOUT",
    "RPV_SIZE",
    "BadDeviceUri",
    "BadRequest",
    "CloseCode",
    "Color",
    "ConnectCode",
    "ConnectFailed",
    "ConnectRejected",
    "ConnectUnavailable",
    "DecryptFailed",
    "DeviceAccessDenied",
    "DeviceGone",
    "DeviceInfo",
    "DeviceNotFound",
    "DeviceNotOpen",
    "ErrorCode",
    "Frame",
    "FrameTransport",
    "HandshakeFailed",
    "HandshakeRefused",
    "ImprintResult",
    "KeyTimeout",
    "KeysetMismatch",
    "LinkClosed",
    "LocalProtocolError",
    "NoBlankKey",
    "Notice",
    "NoticeKind",
    "OperationCancelled",
    "OperationError",
    "OperationTimeout",
    "PedBusy",
    "PedDriver",
    "PedError",
    "PedFault",
    "PedInfo",
    "PedSession",
    "PedclientTransport",
    "ReadResult",
    "RefuseReason",
    "RemoteProtocolError",
    "RpvMismatch",
    "SessionBroken",
    "SessionEnd",
    "TransportClosed",
    "TransportError",
    "Unsupported",
    "WrongColor",
    "connect_via_pedclient",
    "default_pedclient_socket",
    "open_driver",
    "open_ped_session",
    "session_end",
]
