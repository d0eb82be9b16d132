"""Sans-IO state machine of one client-protocol connection (either end).

Theory of operation
-------------------
hsmclient is the CLIENT, pedhsm the SERVER, each over its own mutual TLS 1.3 stream::

    client                          server
    Hello(versions)      ->
                         <-         Welcome(version, max in flight, HSM serial) | Refused
    Request(id, op, ...) ->                          (up to max in flight unanswered)
                         <-         Result(id, op, ...) | Failure(id, rv, message)
    Close(code, text)    <->        (either side, any time after the hello; last frame)

Several requests may be in flight; each answer names its request id, and answers may come
in any order (the server serves one PKCS#11 session's requests in order, different
sessions' as they finish).  `NtlsConnection` keeps both sides' view as h11 does:
``send(message)`` checks that *we* may send it now (`LocalProtocolError` otherwise) and
returns its bytes (a ``bytearray``: wipe it once sent, it may hold a challenge);
``receive_data(bytes)`` buffers what the peer sent (``b""`` = end of stream) and
``next_event()`` returns the peer's messages, `ConnectionLost` at the end of the stream,
or `NEED_DATA`.  Anything the peer got wrong (a frame out of place, an answer to no
request, a request id already in flight, too many in flight, a malformed field) is a
`RemoteProtocolError`; the connection is then finished.

The transitions are data (`TRANSITIONS`), so tests and docs/protocol/client.md enumerate
them.  The version rule: the server chooses the highest version both speak; a client
refuses a Welcome outside its own range (no downgrade below its minimum).  Every frame
after the hello is written and read in the version chosen (from version 2, a partition
info carries auto-activation; a version-1 peer never sees that bit, nor may send it).
"""

from __future__ import annotations

import enum

import attrs

from ped.errors import LocalProtocolError, RemoteProtocolError
from ped.ntls.frames import FrameBuffer, decode, encode
from ped.ntls.messages import (
    MAX_IN_FLIGHT,
    NTLS_VERSION_MAX,
    NTLS_VERSION_MIN,
    RESULT_OF,
    Close,
    Failure,
    FrameType,
    Hello,
    Message,
    Op,
    Refused,
    Welcome,
    op_of,
)
from ped.wire.framing import NEED_DATA, NeedData


class NtlsRole(enum.Enum):
    CLIENT = "client"  # hsmclient
    SERVER = "server"  # pedhsm


class State(enum.Enum):
    START = "start"
    HELLO = "hello"  # the hello went (client) or came (server); no answer yet
    OPEN = "open"
    CLOSED = "closed"
    ERROR = "error"


@attrs.frozen
class ConnectionLost:
    """The peer's stream ended (after a Close, or without one: a dropped connection)."""

    clean: bool  # a Close came first


Event = Message | ConnectionLost

_SEND, _RECEIVE = "send", "receive"
_OPENING = (State.HELLO, State.OPEN)

#: (our role, state, direction, frame type) -> the state after it.  Anything not here is
#: refused: a `LocalProtocolError` when we send it, a `RemoteProtocolError` when received.
TRANSITIONS: dict[tuple[NtlsRole, State, str, FrameType], State] = {
    (NtlsRole.CLIENT, State.START, _SEND, FrameType.HELLO): State.HELLO,
    (NtlsRole.CLIENT, State.HELLO, _RECEIVE, FrameType.WELCOME): State.OPEN,
    (NtlsRole.CLIENT, State.HELLO, _RECEIVE, FrameType.REFUSED): State.CLOSED,
    (NtlsRole.CLIENT, State.OPEN, _SEND, FrameType.REQUEST): State.OPEN,
    (NtlsRole.CLIENT, State.OPEN, _RECEIVE, FrameType.RESULT): State.OPEN,
    (NtlsRole.CLIENT, State.OPEN, _RECEIVE, FrameType.FAILURE): State.OPEN,
    (NtlsRole.SERVER, State.START, _RECEIVE, FrameType.HELLO): State.HELLO,
    (NtlsRole.SERVER, State.HELLO, _SEND, FrameType.WELCOME): State.OPEN,
    (NtlsRole.SERVER, State.HELLO, _SEND, FrameType.REFUSED): State.CLOSED,
    (NtlsRole.SERVER, State.OPEN, _RECEIVE, FrameType.REQUEST): State.OPEN,
    (NtlsRole.SERVER, State.OPEN, _SEND, FrameType.RESULT): State.OPEN,
    (NtlsRole.SERVER, State.OPEN, _SEND, FrameType.FAILURE): State.OPEN,
    **{
        (role, state, direction, FrameType.CLOSE): State.CLOSED
        for role in NtlsRole
        for state in _OPENING
        for direction in (_SEND, _RECEIVE)
    },
}


def frame_type(message: Message) -> FrameType:
    """The frame type *message* travels in."""
    if isinstance(message, Hello | Welcome | Refused | Close):
        return message.TYPE
    if isinstance(message, Failure):
        return FrameType.FAILURE
    if hasattr(message, "OP"):
        return FrameType.REQUEST
    return FrameType.RESULT


def choose_version(hello: Hello) -> int | None:
    """The version a server answers *hello* with, or None when there is none in common."""
    best = min(hello.version_max, NTLS_VERSION_MAX)
    return best if best >= max(hello.version_min, NTLS_VERSION_MIN) else None


class NtlsConnection:
    """One end of one connection; see the module docstring."""

    def __init__(self, role: NtlsRole, *, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.role = role
        self.state = State.START
        self.version: int | None = None
        self.max_in_flight = max_in_flight
        self.peer_closed: Close | None = None
        #: request id -> its call, for the requests sent (client) or received (server)
        #: and not answered yet.
        self.in_flight: dict[int, Op] = {}
        self._frames = FrameBuffer()
        self._eof = False
        self._next_id = 1

    @property
    def _version(self) -> int:
        """The version values are written and read in (the lowest until the hello is done)."""
        return self.version if self.version is not None else NTLS_VERSION_MIN

    # ---- sending ----------------------------------------------------------------------

    def next_request_id(self) -> int:
        """A request id not in flight (ids wrap at 2**32, skipping those still pending)."""
        while True:
            rid = self._next_id
            self._next_id = self._next_id % 0xFFFFFFFF + 1
            if rid not in self.in_flight:
                return rid

    @property
    def can_request(self) -> bool:
        """True when a request may be sent now without exceeding the limit."""
        return self.state is State.OPEN and len(self.in_flight) < self.max_in_flight

    def send(self, message: Message) -> bytearray:
        """The bytes of *message*, if we may send it now; wipe them once sent."""
        if self.state is State.ERROR:
            raise LocalProtocolError("this connection failed; close it")
        ftype = frame_type(message)
        after = TRANSITIONS.get((self.role, self.state, _SEND, ftype))
        if after is None:
            raise LocalProtocolError(
                f"the {self.role.value} cannot send {ftype.name} in state {self.state.value}"
            )
        if ftype is FrameType.REQUEST:
            rid, op = message.request_id, message.OP  # type: ignore[union-attr]
            if rid in self.in_flight:
                raise LocalProtocolError(f"request id {rid} is already in flight")
            if len(self.in_flight) >= self.max_in_flight:
                raise LocalProtocolError(f"{self.max_in_flight} requests are already in flight")
            data = encode(message, self._version)
            self.in_flight[rid] = op
        elif ftype in (FrameType.RESULT, FrameType.FAILURE):
            rid = message.request_id  # type: ignore[union-attr]
            expected = self.in_flight.get(rid)
            if expected is None:
                raise LocalProtocolError(f"request id {rid} is not waiting for an answer")
            if ftype is FrameType.RESULT and op_of(message) is not expected:  # type: ignore[arg-type]
                raise LocalProtocolError(f"request {rid} is {expected.name}, not that answer")
            data = encode(message, self._version)
            del self.in_flight[rid]
        else:
            data = encode(message, self._version)
            if isinstance(message, Welcome):
                self.version = message.version
                self.max_in_flight = message.max_in_flight
        self.state = after
        return data

    # ---- receiving --------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        """What the peer sent; ``b""`` means its stream ended."""
        if self._eof:
            raise LocalProtocolError("data after the end of the stream")
        if data:
            self._frames.feed(data)
        else:
            self._eof = True

    def next_event(self) -> Event | NeedData:
        """The peer's next message, `ConnectionLost`, or `NEED_DATA`."""
        if self.state is State.ERROR:
            raise LocalProtocolError("this connection failed; close it")
        try:
            frame = self._frames.next_frame()
            if frame is None:
                if not self._eof:
                    return NEED_DATA
                self._frames.check_eof()
                clean = self.peer_closed is not None or self.state is State.CLOSED
                self.state = State.CLOSED
                return ConnectionLost(clean)
            ftype, payload = frame
            try:
                message = decode(ftype, payload, self._version)
            finally:
                payload[:] = bytes(len(payload))  # a login's challenge lived here
            self._received(message)
            return message
        except RemoteProtocolError:
            self.state = State.ERROR
            self._frames.wipe()
            raise

    def _received(self, message: Message) -> None:
        ftype = frame_type(message)
        after = TRANSITIONS.get((self.role, self.state, _RECEIVE, ftype))
        if after is None:
            raise RemoteProtocolError(
                f"the {_peer(self.role)} sent {ftype.name} in state {self.state.value}"
            )
        if ftype is FrameType.REQUEST:
            rid = message.request_id  # type: ignore[union-attr]
            if rid in self.in_flight:
                raise RemoteProtocolError(f"request id {rid} is already in flight")
            if len(self.in_flight) >= self.max_in_flight:
                raise RemoteProtocolError(
                    f"more than {self.max_in_flight} requests in flight; wait for answers"
                )
            self.in_flight[rid] = message.OP  # type: ignore[union-attr]
        elif ftype in (FrameType.RESULT, FrameType.FAILURE):
            rid = message.request_id  # type: ignore[union-attr]
            expected = self.in_flight.get(rid)
            if expected is None:
                raise RemoteProtocolError(f"an answer to request id {rid}, which is not in flight")
            if ftype is FrameType.RESULT and not isinstance(message, RESULT_OF[expected]):
                raise RemoteProtocolError(f"request {rid} is {expected.name}; the answer is not")
            if ftype is FrameType.RESULT and op_of(message) is not expected:  # type: ignore[arg-type]
                raise RemoteProtocolError(f"request {rid} is {expected.name}; the answer is not")
            del self.in_flight[rid]
        elif isinstance(message, Welcome):
            if not NTLS_VERSION_MIN <= message.version <= NTLS_VERSION_MAX:
                raise RemoteProtocolError(
                    f"pedhsm chose protocol version {message.version}; this hsmclient speaks "
                    f"{NTLS_VERSION_MIN}-{NTLS_VERSION_MAX}: upgrade the older side"
                )
            self.version = message.version
            self.max_in_flight = min(self.max_in_flight, message.max_in_flight)
        elif isinstance(message, Close):
            self.peer_closed = message
        self.state = after


def _peer(role: NtlsRole) -> str:
    return "server" if role is NtlsRole.CLIENT else "client"
