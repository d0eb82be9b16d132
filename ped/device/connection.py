"""The sans-IO device transport connection: which device message may go when, either side.

Theory of operation
-------------------
A PED device exchanges the messages of ``ped.device.messages`` with one *host* (the
process holding the driver: pedserver, or a local HSM).  The host multiplexes several
HSM *sessions* on the one PED: each session carries the end-to-end frames (0x20-0x2F) of
one HSM and is opaque to the host.  docs/protocol/device.md has the bytes.

    host                                   device
    HELLO(versions, host name)     ->
                                   <-      INFO(version, model, firmware, serial, mode)
    SESSION_OPEN(id)               ->
                                   <-      SESSION_OPENED(id)
    SESSION_DATA(id, e2e frame)    <->     SESSION_DATA(id, e2e frame)
                                   <-      DEVICE_EVENT(id, kind, colour, keyset, outcome)
    SESSION_CLOSE(id, reason)      <->     SESSION_CLOSE(id, reason)
    PING(n)                        ->
                                   <-      PONG(n)
                                   <-      DEVICE_ERROR(code, text)   then the device closes

A HELLO always starts afresh: the device drops every session it had (the host may have
restarted).

`DeviceConnection` is the state machine for either role, in the style of h11:
`send(message)` checks that *we* may send it and gives the bytes to write;
`receive_data(bytes)` buffers bytes read, `receive_eof()` says the stream ended, and
`next_event()` parses and gives the messages one at a time, or `NEED_DATA` until more
bytes arrive.  The state changes are data (`TRANSITIONS`, keyed by role, state, direction
and message class); the rules about session ids, which need the open sessions, are code
(`_check`).  Whatever the peer got wrong is a `RemoteProtocolError` (from `next_event`,
or `receive_eof` for a truncated frame); whatever we got wrong a `LocalProtocolError`.

Frames are parsed in `next_event`, one per call, never in `receive_data`: a host that
relays a session's frame as soon as it has it does not first parse the device events
that arrived behind it (the hot path of every login; docs/protocol/device.md).
"""

from __future__ import annotations

import enum

from ped.device.messages import (
    DEVICE_TYPES,
    ConnectionRole,
    DeviceErrorMessage,
    DeviceMessage,
    Hello,
    Info,
    SessionClose,
    SessionData,
    SessionOpen,
    SessionOpened,
    decode_message,
    encode_message,
)
from ped.errors import LocalProtocolError, RemoteProtocolError
from ped.wire.framing import NEED_DATA, FrameDecoder, NeedData


class ConnState(enum.Enum):
    AWAITING_HELLO = "awaiting-hello"  # host: HELLO not sent yet; device: not received yet
    AWAITING_INFO = "awaiting-info"  # host only
    READY = "ready"
    CLOSED = "closed"


class Direction(enum.Enum):
    """Seen from our side of the connection."""

    SEND = "send"
    RECV = "recv"


_H, _D = ConnectionRole.HOST, ConnectionRole.DEVICE
_SEND, _RECV = Direction.SEND, Direction.RECV
_AWAIT_HELLO, _AWAIT_INFO = ConnState.AWAITING_HELLO, ConnState.AWAITING_INFO
_READY, _CLOSED = ConnState.READY, ConnState.CLOSED

#: (our role, state, direction, message class) -> next state.  A message without a row
#: is allowed only while READY, under the session rules of `DeviceConnection._check`.
TRANSITIONS: dict[tuple[ConnectionRole, ConnState, Direction, type[DeviceMessage]], ConnState] = {
    (_H, _AWAIT_HELLO, _SEND, Hello): _AWAIT_INFO,
    (_H, _AWAIT_INFO, _RECV, Info): _READY,
    (_H, _AWAIT_INFO, _RECV, DeviceErrorMessage): _CLOSED,
    (_H, _READY, _RECV, DeviceErrorMessage): _CLOSED,
    (_D, _AWAIT_HELLO, _RECV, Hello): _AWAIT_HELLO,
    (_D, _AWAIT_HELLO, _SEND, Info): _READY,
    (_D, _AWAIT_HELLO, _SEND, DeviceErrorMessage): _CLOSED,
    (_D, _READY, _SEND, DeviceErrorMessage): _CLOSED,
    (_D, _READY, _RECV, Hello): _AWAIT_HELLO,
}

_PEER = {ConnectionRole.HOST: ConnectionRole.DEVICE, ConnectionRole.DEVICE: ConnectionRole.HOST}


class DeviceConnection:
    """Sans-IO device transport for one side (see the module docstring)."""

    def __init__(self, role: ConnectionRole) -> None:
        self.role = role
        self.state = ConnState.AWAITING_HELLO
        #: Sessions open on both sides (host: after SESSION_OPENED; device: after sending it).
        self.sessions: set[int] = set()
        self._pending_open: set[int] = set()
        self._decoder = FrameDecoder(accepted=DEVICE_TYPES)
        #: Messages parsed at the end of the stream, not given out yet.
        self._events: list[DeviceMessage] = []
        #: The versions our (host) or the peer's (device) HELLO offered: INFO must pick one.
        self._offered: tuple[int, int] | None = None

    # -- outgoing
    def send(self, message: DeviceMessage) -> bytes:
        """The bytes of *message*; `LocalProtocolError` if we may not send it now."""
        next_state = self._check(message, _SEND, LocalProtocolError)
        data = encode_message(message)
        self._apply(message, next_state)
        return data

    # -- incoming
    def receive_data(self, data: bytes | bytearray) -> None:
        """Take bytes read; `next_event` parses them.  Call it until it gives `NEED_DATA`
        before feeding more (what is buffered is one read plus one frame at most)."""
        if self.state is ConnState.CLOSED:
            raise LocalProtocolError("device connection is closed")
        self._decoder.feed(data)

    def receive_eof(self) -> None:
        """The stream ended: what was whole before the end is still given by `next_event`,
        then the end itself is checked (`RemoteProtocolError` for a truncated frame)."""
        while (message := self._parse_next()) is not NEED_DATA:
            self._events.append(message)
        self._decoder.check_eof()
        self.state = ConnState.CLOSED
        self.sessions.clear()
        self._pending_open.clear()

    def next_event(self) -> DeviceMessage | NeedData:
        """The next message received, or `NEED_DATA` until more bytes arrive.

        A malformed frame raises `RemoteProtocolError` here (not in `receive_data`).
        """
        if self._events:
            return self._events.pop(0)
        return self._parse_next()

    def _parse_next(self) -> DeviceMessage | NeedData:
        frame = self._decoder.next_frame()
        if frame is NEED_DATA:
            return NEED_DATA
        message = decode_message(frame)
        self._apply(message, self._check(message, _RECV, RemoteProtocolError))
        return message

    # -- rules
    def _check(
        self, message: DeviceMessage, direction: Direction, error: type[Exception]
    ) -> ConnState | None:
        """Raise *error* if *message* may not go in *direction* now; else the state it
        leads to (None: it does not change the state)."""
        sender = self.role if direction is _SEND else _PEER[self.role]
        if message.SENDER is not None and message.SENDER is not sender:
            raise error(f"{type(message).__name__} may only be sent by the {message.SENDER.value}")
        next_state = TRANSITIONS.get((self.role, self.state, direction, type(message)))
        if next_state is not None:
            if isinstance(message, Info) and self._offered is not None:
                low, high = self._offered
                if not low <= message.version <= high:
                    # No downgrade, no surprise upgrade: the same rule as the link layer.
                    raise error(
                        f"INFO chose device protocol version {message.version}, outside the "
                        f"{low}-{high} the HELLO offered; refusing to downgrade"
                    )
            return next_state
        if self.state is not ConnState.READY:
            raise error(
                f"{type(message).__name__} is not allowed while the device connection is "
                f"{self.state.value}"
            )
        if isinstance(message, SessionData):
            if direction is _SEND and message.session not in self.sessions:
                raise error(f"session {message.session} is not open")
        elif isinstance(message, (Hello, Info)):
            raise error(f"{type(message).__name__} is not allowed once the connection is ready")
        elif isinstance(message, SessionOpen):
            if message.session in self.sessions or message.session in self._pending_open:
                raise error(f"session {message.session} is already open")
        elif isinstance(message, SessionOpened):
            if message.session not in self._pending_open:
                if direction is _RECV:
                    raise error(
                        f"SESSION_OPENED for session {message.session} that was not asked for"
                    )
                raise error(f"session {message.session} was not asked for")
        # Data, events and closes for sessions the peer already forgot are tolerated on
        # receipt (a close may cross them on the wire); the shells drop them.
        return None

    def _apply(self, message: DeviceMessage, next_state: ConnState | None) -> None:
        if next_state is not None:
            self.state = next_state
            if isinstance(message, Hello):
                self.sessions.clear()
                self._pending_open.clear()
                self._offered = (message.min_version, message.max_version)
        elif isinstance(message, SessionData):
            pass  # the commonest message: no change
        elif isinstance(message, SessionOpen):
            self._pending_open.add(message.session)
        elif isinstance(message, SessionOpened):
            self._pending_open.discard(message.session)
            self.sessions.add(message.session)
        elif isinstance(message, SessionClose):
            self._pending_open.discard(message.session)
            self.sessions.discard(message.session)
