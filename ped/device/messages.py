"""Device transport messages (0x30-0x3F): their fields, their bytes and their parsing.

A PED device (the emulated PED over a socket, or a USB PED over two bulk endpoints)
exchanges frames of the common envelope (``ped.wire.framing``) with one *host*: the
process holding the driver (pedserver, or a local HSM).  This module says what each
frame carries; ``ped.device.connection`` says when each may be sent.  PROTOCOL.md
(docs/protocol/device.md) has the bytes.

DEVICE_EVENT carries only *non-secret* metadata of what the PED did, so that the host
can log one line per operation without seeing inside the channel: colour, keyset id (a
public identifier), and an outcome word.  Never a secret, PIN, RPV or key share: the
fields are short, printable and built by the PED from enums.
"""

from __future__ import annotations

import enum
import struct
from typing import ClassVar, Self

import attrs

from ped.errors import FieldOutOfRange, LocalProtocolError, RemoteProtocolError
from ped.wire.codec import Reader, Writer
from ped.wire.framing import Frame, encode_frame
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


class SessionCloseReason(enum.IntEnum):
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


class DeviceErrorCode(enum.IntEnum):
    UNSUPPORTED_VERSION = 1
    PROTOCOL_ERROR = 2
    BUSY = 3  # the device already serves another host
    INTERNAL = 4


class ConnectionRole(enum.Enum):
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
    SENDER: ClassVar[ConnectionRole] = ConnectionRole.HOST
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
    SENDER: ClassVar[ConnectionRole] = ConnectionRole.DEVICE
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
        model = r.text16("model", max_len=MAX_SHORT_TEXT)
        firmware = r.text16("firmware", max_len=MAX_SHORT_TEXT)
        serial = r.text16("serial", max_len=MAX_SHORT_TEXT)
        mode = r.text16("mode", max_len=MAX_SHORT_TEXT)
        return cls(version, model, firmware, serial, mode, r.u16("max sessions", low=1))


@attrs.frozen
class _SessionOnly:
    session: int

    def payload(self) -> bytes:
        return Writer().u32(self.session).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> Self:
        return cls(r.u32("session id", low=1))


@attrs.frozen
class SessionOpen(_SessionOnly):
    TYPE: ClassVar[int] = DeviceType.SESSION_OPEN
    SENDER: ClassVar[ConnectionRole] = ConnectionRole.HOST


@attrs.frozen
class SessionOpened(_SessionOnly):
    TYPE: ClassVar[int] = DeviceType.SESSION_OPENED
    SENDER: ClassVar[ConnectionRole] = ConnectionRole.DEVICE


@attrs.frozen
class SessionClose:
    TYPE: ClassVar[int] = DeviceType.SESSION_CLOSE
    SENDER: ClassVar[ConnectionRole | None] = None  # either side
    session: int
    reason: SessionCloseReason = SessionCloseReason.NORMAL
    detail: str = ""

    def payload(self) -> bytes:
        detail = _printable(self.detail, "close detail", MAX_TEXT)
        return Writer().u32(self.session).u8(self.reason).text16(detail).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> SessionClose:
        session = r.u32("session id", low=1)
        reason = r.u8("close reason", high=max(SessionCloseReason))
        return cls(session, SessionCloseReason(reason), r.text16("close detail", max_len=MAX_TEXT))


@attrs.frozen(repr=False)
class SessionData:
    """One end-to-end frame of one session (opaque to the host)."""

    TYPE: ClassVar[int] = DeviceType.SESSION_DATA
    SENDER: ClassVar[ConnectionRole | None] = None
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
    SENDER: ClassVar[ConnectionRole] = ConnectionRole.DEVICE
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
    SENDER: ClassVar[ConnectionRole] = ConnectionRole.DEVICE
    code: DeviceErrorCode
    detail: str = ""

    def payload(self) -> bytes:
        detail = _printable(self.detail, "error detail", MAX_TEXT)
        return Writer().u8(self.code).text16(detail).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> DeviceErrorMessage:
        code = r.u8("error code", low=min(DeviceErrorCode), high=max(DeviceErrorCode))
        return cls(DeviceErrorCode(code), r.text16("error detail", max_len=MAX_TEXT))


@attrs.frozen
class Ping:
    TYPE: ClassVar[int] = DeviceType.PING
    SENDER: ClassVar[ConnectionRole] = ConnectionRole.HOST
    nonce: int

    def payload(self) -> bytes:
        return Writer().u64(self.nonce).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> Ping:
        return cls(r.u64("nonce"))


@attrs.frozen
class Pong(Ping):
    TYPE: ClassVar[int] = DeviceType.PONG
    SENDER: ClassVar[ConnectionRole] = ConnectionRole.DEVICE


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

MESSAGE_CLASSES: dict[int, type[DeviceMessage]] = {
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
