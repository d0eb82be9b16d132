"""Device transport: the frames between a PED device and its host (0x30-0x3F).

Theory of operation
-------------------
A PED device (the emulated PED over a socket, or a USB PED over two bulk endpoints)
exchanges frames of the common envelope (``ped.wire.framing``) with one *host*: the
process holding the driver (pedserver, or a local HSM).  The host multiplexes several
HSM *sessions* on the one PED: each session carries the end-to-end frames (0x20-0x2F) of
one HSM and is opaque to the host.  PROTOCOL.md (docs/protocol/device.md) has the bytes.

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

A HELLO always starts afresh: the device drops every session it had (the host may
have restarted).  DEVICE_EVENT carries only *non-secret* metadata of what the PED did,
so that the host can log one line per operation without seeing inside the channel:
colour, keyset id (a public identifier), and an outcome word.  Never a secret, PIN,
RPV or key share: the fields are short, printable and built by the PED from enums.

`DeviceConnection` is the sans-IO state machine for either role: `send(message)` gives
the bytes to write, `receive_data(bytes)` takes bytes read, `next_event()` parses and
gives messages one at a time, and both check direction, state and session ids.  Whatever
the peer got wrong is a `RemoteProtocolError` (from `next_event`, or `receive_eof` for a
truncated frame); whatever we got wrong a `LocalProtocolError`.
"""

from __future__ import annotations

import enum
import struct
from typing import ClassVar

import attrs

from ped.errors import FieldOutOfRange, LocalProtocolError, RemoteProtocolError
from ped.wire.codec import Reader, Writer
from ped.wire.framing import Frame, FrameDecoder, encode_frame
from ped.wire.types import DEVICE_RANGE, E2E_RANGE

DEVICE_PROTOCOL_VERSION = 1
#: Sessions one device serves at once (a PED serves one operation at a time, but several
#: HSMs may hold a handshaken channel open).
DEFAULT_MAX_SESSIONS = 16
MAX_TEXT = 256
MAX_SHORT_TEXT = 64


class DeviceType(enum.IntEnum):
    HELLO = 0x30
    INFO = 0x31
    SESSION_OPEN = 0x32
    SESSION_OPENED = 0x33
    SESSION_CLOSE = 0x34
    SESSION_DATA = 0x35
    DEVICE_EVENT = 0x36
    DEVICE_ERROR = 0x37
    PING = 0x38
    PONG = 0x39


class CloseReason(enum.IntEnum):
    NORMAL = 0  # the side that sends it is done with the session
    TOO_MANY_SESSIONS = 1  # the device cannot open another one
    PROTOCOL_ERROR = 2  # a frame of this session was refused
    SHUTTING_DOWN = 3  # the device is stopping (pedemu ended, PED unplugging)
    UNKNOWN_SESSION = 4  # the session id is not open


class EventKind(enum.IntEnum):
    HANDSHAKE = 1  # outcome: ok | rpv-mismatch | refused
    OP_STARTED = 2  # detail: read-secret | imprint | show | ...
    OP_FINISHED = 3  # outcome: ok | timeout | cancelled | keyset-mismatch | ...
    KEY_READ = 4  # colour, keyset, outcome ok
    KEY_REFUSED = 5  # outcome: wrong-colour | blank | already-read | unreadable | ...
    KEY_WRITTEN = 6  # colour, keyset, outcome ok
    PIN_ENTERED = 7  # outcome: ok (never the digits, never their number)
    DEVICE_STATE = 8  # detail: idle | local | remote | unplugging ...


class ErrorCode(enum.IntEnum):
    UNSUPPORTED_VERSION = 1
    PROTOCOL_ERROR = 2
    BUSY = 3  # the device already serves another host
    INTERNAL = 4


class Role(enum.Enum):
    HOST = "host"
    DEVICE = "device"


_EVENT_KIND_LOW, _EVENT_KIND_HIGH = min(EventKind), max(EventKind)
_EVENT_HEAD = struct.Struct(">IBB")  # session, kind, colour
_U16 = struct.Struct(">H")
_FRAME_WHAT = {int(t): f"device frame {t.name}" for t in DeviceType}


def _printable(text: str, field: str, limit: int) -> str:
    # Events and errors are logged by the host: keep them one short printable line.
    if len(text.encode("utf-8")) > limit:
        raise LocalProtocolError(f"device {field} is over {limit} bytes")
    if not text.isprintable():  # every character printable ("" is too)
        raise LocalProtocolError(f"device {field} has control characters")
    return text


# ----------------------------------------------------------------------------- messages


@attrs.frozen
class Hello:
    TYPE: ClassVar[int] = DeviceType.HELLO
    SENDER: ClassVar[Role] = Role.HOST
    min_version: int = DEVICE_PROTOCOL_VERSION
    max_version: int = DEVICE_PROTOCOL_VERSION
    host: str = ""

    def payload(self) -> bytes:
        host = _printable(self.host, "host name", MAX_SHORT_TEXT)
        return Writer().u8(self.min_version).u8(self.max_version).text16(host).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> Hello:
        lo = r.u8("min version", low=1)
        hi = r.u8("max version", low=lo)
        return cls(lo, hi, r.text16("host", max_len=MAX_SHORT_TEXT))


@attrs.frozen
class Info:
    TYPE: ClassVar[int] = DeviceType.INFO
    SENDER: ClassVar[Role] = Role.DEVICE
    version: int
    model: str
    firmware: str
    serial: str
    mode: str
    max_sessions: int = DEFAULT_MAX_SESSIONS

    def payload(self) -> bytes:
        w = Writer().u8(self.version)
        for name in ("model", "firmware", "serial", "mode"):
            w.text16(_printable(getattr(self, name), name, MAX_SHORT_TEXT))
        return w.u16(self.max_sessions).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> Info:
        version = r.u8("version", low=1)
        texts = [
            r.text16(n, max_len=MAX_SHORT_TEXT) for n in ("model", "firmware", "serial", "mode")
        ]
        return cls(version, *texts, max_sessions=r.u16("max sessions", low=1))


@attrs.frozen
class _SessionOnly:
    session: int

    def payload(self) -> bytes:
        return Writer().u32(self.session).getvalue()

    @classmethod
    def parse(cls, r: Reader):  # type: ignore[no-untyped-def]
        return cls(r.u32("session id", low=1))


@attrs.frozen
class SessionOpen(_SessionOnly):
    TYPE: ClassVar[int] = DeviceType.SESSION_OPEN
    SENDER: ClassVar[Role] = Role.HOST


@attrs.frozen
class SessionOpened(_SessionOnly):
    TYPE: ClassVar[int] = DeviceType.SESSION_OPENED
    SENDER: ClassVar[Role] = Role.DEVICE


@attrs.frozen
class SessionClose:
    TYPE: ClassVar[int] = DeviceType.SESSION_CLOSE
    SENDER: ClassVar[Role | None] = None  # either side
    session: int
    reason: CloseReason = CloseReason.NORMAL
    detail: str = ""

    def payload(self) -> bytes:
        detail = _printable(self.detail, "close detail", MAX_TEXT)
        return Writer().u32(self.session).u8(self.reason).text16(detail).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> SessionClose:
        session = r.u32("session id", low=1)
        reason = r.u8("close reason", high=max(CloseReason))
        return cls(session, CloseReason(reason), r.text16("close detail", max_len=MAX_TEXT))


@attrs.frozen(repr=False)
class SessionData:
    """One end-to-end frame of one session (opaque to the host)."""

    TYPE: ClassVar[int] = DeviceType.SESSION_DATA
    SENDER: ClassVar[Role | None] = None
    session: int
    frame: Frame

    def payload(self) -> bytes:
        if self.frame.type not in E2E_RANGE:
            raise LocalProtocolError(
                f"frame type 0x{self.frame.type:02x} is not end-to-end (0x20-0x2F)"
            )
        return Writer().u32(self.session).u8(self.frame.type).raw(self.frame.payload).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> SessionData:
        session = r.u32("session id", low=1)
        type_ = r.u8("end-to-end frame type", low=E2E_RANGE.start, high=E2E_RANGE.stop - 1)
        return cls(session, Frame(type_, r.raw(r.remaining(), "end-to-end payload")))

    def __repr__(self) -> str:
        return f"SessionData(session={self.session}, frame={self.frame!r})"


@attrs.frozen
class DeviceEvent:
    """Non-secret metadata of what the PED did, for the host's log."""

    TYPE: ClassVar[int] = DeviceType.DEVICE_EVENT
    SENDER: ClassVar[Role] = Role.DEVICE
    session: int  # 0 = not about one session
    kind: EventKind
    color: int = 0  # keys.colors.Color code, 0 = none
    keyset: str = ""
    outcome: str = ""
    detail: str = ""

    def payload(self) -> bytes:
        # Three events go with every login's answer: one pack, not a Writer per field.
        texts = (
            _printable(self.keyset, "event keyset", MAX_SHORT_TEXT).encode("utf-8"),
            _printable(self.outcome, "event outcome", MAX_SHORT_TEXT).encode("utf-8"),
            _printable(self.detail, "event detail", MAX_TEXT).encode("utf-8"),
        )
        try:
            head = _EVENT_HEAD.pack(self.session, self.kind, self.color)
        except struct.error:
            raise LocalProtocolError(
                f"device event: session {self.session}, kind {int(self.kind)} or colour "
                f"{self.color} does not fit its field"
            ) from None
        return head + b"".join(_U16.pack(len(t)) + t for t in texts)

    @classmethod
    def parse(cls, r: Reader) -> DeviceEvent:
        session = r.u32("session id")
        kind = EventKind(r.u8("event kind", low=_EVENT_KIND_LOW, high=_EVENT_KIND_HIGH))
        color = r.u8("colour", high=16)
        keyset = r.text16("event keyset", max_len=MAX_SHORT_TEXT)
        outcome = r.text16("event outcome", max_len=MAX_SHORT_TEXT)
        detail = r.text16("event detail", max_len=MAX_TEXT)
        for name, text in (("keyset", keyset), ("outcome", outcome), ("detail", detail)):
            if not text.isprintable():
                raise FieldOutOfRange(f"device event: field {name!r} has control characters")
        return cls(session, kind, color, keyset, outcome, detail)

    def describe(self) -> str:
        """One log line, e.g. 'key-read blue keyset 3f2a... ok'."""
        parts = [self.kind.name.lower().replace("_", "-")]
        if self.color:
            parts.append(_color_word(self.color))
        if self.keyset:
            parts.append(f"keyset {self.keyset}")
        if self.detail:
            parts.append(self.detail)
        if self.outcome:
            parts.append(f"result {self.outcome}")
        return " ".join(parts)


def _color_word(code: int) -> str:
    # Local table, not keys.colors: the relays must not import keys (import contract).
    names = {1: "blue", 2: "red", 3: "black", 4: "gray", 5: "white", 6: "orange", 7: "purple"}
    return names.get(code, f"colour-{code}")


@attrs.frozen
class DeviceErrorMessage:
    TYPE: ClassVar[int] = DeviceType.DEVICE_ERROR
    SENDER: ClassVar[Role] = Role.DEVICE
    code: ErrorCode
    detail: str = ""

    def payload(self) -> bytes:
        detail = _printable(self.detail, "error detail", MAX_TEXT)
        return Writer().u8(self.code).text16(detail).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> DeviceErrorMessage:
        code = r.u8("error code", low=min(ErrorCode), high=max(ErrorCode))
        return cls(ErrorCode(code), r.text16("error detail", max_len=MAX_TEXT))


@attrs.frozen
class Ping:
    TYPE: ClassVar[int] = DeviceType.PING
    SENDER: ClassVar[Role] = Role.HOST
    nonce: int

    def payload(self) -> bytes:
        return Writer().u64(self.nonce).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> Ping:
        return cls(r.u64("nonce"))


@attrs.frozen
class Pong(Ping):
    TYPE: ClassVar[int] = DeviceType.PONG
    SENDER: ClassVar[Role] = Role.DEVICE


DeviceMessage = (
    Hello
    | Info
    | SessionOpen
    | SessionOpened
    | SessionClose
    | SessionData
    | DeviceEvent
    | DeviceErrorMessage
    | Ping
    | Pong
)

MESSAGE_CLASSES: dict[int, type] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Info,
        SessionOpen,
        SessionOpened,
        SessionClose,
        SessionData,
        DeviceEvent,
        DeviceErrorMessage,
        Ping,
        Pong,
    )
}
DEVICE_TYPES = frozenset(MESSAGE_CLASSES)


def encode_message(message: DeviceMessage) -> bytes:
    """The wire bytes of one device-transport message."""
    return encode_frame(Frame(message.TYPE, message.payload()))


def decode_message(frame: Frame) -> DeviceMessage:
    """Parse a device-transport frame; `RemoteProtocolError` if it is not one."""
    cls = MESSAGE_CLASSES.get(frame.type)
    if cls is None or frame.type not in DEVICE_RANGE:
        raise RemoteProtocolError(f"frame type 0x{frame.type:02x} is not a device frame")
    reader = Reader(frame.payload, what=_FRAME_WHAT[frame.type])
    try:
        message = cls.parse(reader)
    except ValueError as exc:
        if isinstance(exc, RemoteProtocolError):
            raise
        raise FieldOutOfRange(f"device frame {DeviceType(frame.type).name}: {exc}") from None
    reader.finish()
    return message


# ----------------------------------------------------------------------- state machine


class ConnState(enum.Enum):
    AWAITING_HELLO = "awaiting-hello"  # host: HELLO not sent yet; device: not received yet
    AWAITING_INFO = "awaiting-info"  # host only
    READY = "ready"
    CLOSED = "closed"


# (role, state, direction, message type) -> next state; "send"/"recv" from *our* side.
_STATE_TABLE: dict[tuple[Role, ConnState, str, int], ConnState] = {
    (Role.HOST, ConnState.AWAITING_HELLO, "send", DeviceType.HELLO): ConnState.AWAITING_INFO,
    (Role.HOST, ConnState.AWAITING_INFO, "recv", DeviceType.INFO): ConnState.READY,
    (Role.HOST, ConnState.AWAITING_INFO, "recv", DeviceType.DEVICE_ERROR): ConnState.CLOSED,
    (Role.DEVICE, ConnState.AWAITING_HELLO, "recv", DeviceType.HELLO): ConnState.AWAITING_HELLO,
    (Role.DEVICE, ConnState.AWAITING_HELLO, "send", DeviceType.INFO): ConnState.READY,
    (Role.DEVICE, ConnState.AWAITING_HELLO, "send", DeviceType.DEVICE_ERROR): ConnState.CLOSED,
    (Role.HOST, ConnState.READY, "recv", DeviceType.DEVICE_ERROR): ConnState.CLOSED,
    (Role.DEVICE, ConnState.READY, "send", DeviceType.DEVICE_ERROR): ConnState.CLOSED,
    (Role.DEVICE, ConnState.READY, "recv", DeviceType.HELLO): ConnState.AWAITING_HELLO,
}


class DeviceConnection:
    """Sans-IO device transport for one side (see the module docstring)."""

    def __init__(self, role: Role, *, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        self.role = role
        self.state = ConnState.AWAITING_HELLO
        self.max_sessions = max_sessions
        #: Sessions open on both sides (host: after SESSION_OPENED; device: after sending it).
        self.sessions: set[int] = set()
        self._pending_open: set[int] = set()
        self._decoder = FrameDecoder(accepted=DEVICE_TYPES)
        self._events: list[DeviceMessage] = []
        #: The versions our (host) or the peer's (device) HELLO offered: INFO must pick one.
        self._offered: tuple[int, int] | None = None

    # -- outgoing
    def send(self, message: DeviceMessage) -> bytes:
        self._check(message, "send", LocalProtocolError)
        self._apply(message, "send")
        return encode_message(message)

    # -- incoming
    def receive_data(self, data: bytes) -> None:
        """Take bytes read; `next_event` parses them.  Call it until it returns None
        before feeding more (what is buffered is one read plus one frame at most)."""
        if self.state is ConnState.CLOSED:
            raise LocalProtocolError("device connection is closed")
        self._decoder.feed(data)

    def receive_eof(self) -> None:
        # The complete frames before the end are still the peer's: parse them now, so
        # that `next_event` gives them, then the end itself is checked.
        while (message := self._parse_next()) is not None:
            self._events.append(message)
        self._decoder.check_eof()
        self.state = ConnState.CLOSED
        self.sessions.clear()
        self._pending_open.clear()

    def next_event(self) -> DeviceMessage | None:
        """The next message received, or None until more bytes arrive.

        Frames are parsed here, one per call, not in `receive_data`: a host that relays
        a session's frame as soon as it has it does not first parse the device events
        that arrived behind it.  A malformed frame raises `RemoteProtocolError` here.
        """
        if self._events:
            return self._events.pop(0)
        return self._parse_next()

    def _parse_next(self) -> DeviceMessage | None:
        frame = self._decoder.next_frame()
        if frame is None:
            return None
        message = decode_message(frame)
        self._check(message, "recv", RemoteProtocolError)
        self._apply(message, "recv")
        return message

    # -- rules
    def _check(self, message: DeviceMessage, direction: str, error: type[Exception]) -> None:
        sender = self.role if direction == "send" else _other(self.role)
        if message.SENDER is not None and message.SENDER is not sender:
            raise error(f"{type(message).__name__} may only be sent by the {message.SENDER.value}")
        key = (self.role, self.state, direction, message.TYPE)
        if key in _STATE_TABLE:
            if isinstance(message, Info) and self._offered is not None:
                low, high = self._offered
                if not low <= message.version <= high:
                    # No downgrade, no surprise upgrade: the same rule as the link layer.
                    raise error(
                        f"INFO chose device protocol version {message.version}, outside the "
                        f"{low}-{high} the HELLO offered; refusing to downgrade"
                    )
            return
        if self.state is not ConnState.READY:
            raise error(
                f"{type(message).__name__} is not allowed while the device connection is "
                f"{self.state.value}"
            )
        if isinstance(message, (Hello, Info)):
            raise error(f"{type(message).__name__} is not allowed once the connection is ready")
        if isinstance(message, SessionOpen):
            if message.session in self.sessions or message.session in self._pending_open:
                raise error(f"session {message.session} is already open")
        elif isinstance(message, SessionOpened):
            if direction == "recv" and message.session not in self._pending_open:
                raise error(f"SESSION_OPENED for session {message.session} that was not asked for")
            if direction == "send" and message.session not in self._pending_open:
                raise error(f"session {message.session} was not asked for")
        elif isinstance(message, SessionData):
            if message.session not in self.sessions and direction == "send":
                raise error(f"session {message.session} is not open")
        # Data, events and closes for sessions the peer already forgot are tolerated on
        # receipt (a close may cross them on the wire); the shells drop them.

    def _apply(self, message: DeviceMessage, direction: str) -> None:
        key = (self.role, self.state, direction, message.TYPE)
        if key in _STATE_TABLE:
            self.state = _STATE_TABLE[key]
            if isinstance(message, Hello):
                self.sessions.clear()
                self._pending_open.clear()
                self._offered = (message.min_version, message.max_version)
            return
        if isinstance(message, SessionOpen):
            self._pending_open.add(message.session)
        elif isinstance(message, SessionOpened):
            self._pending_open.discard(message.session)
            self.sessions.add(message.session)
        elif isinstance(message, SessionClose):
            self._pending_open.discard(message.session)
            self.sessions.discard(message.session)


def _other(role: Role) -> Role:
    return Role.DEVICE if role is Role.HOST else Role.HOST
