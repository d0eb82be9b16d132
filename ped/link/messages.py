"""Link messages: pedclient <-> pedserver (0x01-0x1F) and HSM <-> pedclient (0x40-0x4F).

Every message is a frozen attrs class with a ``TYPE`` (its frame type), a ``payload()``
that encodes it with ``ped.wire.codec`` and a ``parse(reader)`` classmethod; `encode` and
`decode` go between messages and frames.  End-to-end frames (0x20-0x2F) are not messages
of this layer: they travel as `EndToEnd` events holding the untouched `Frame`.

Texts are bounded, printable UTF-8 (a peer's words end up in logs and on terminals), and
numbers are range-checked on decode: a bad field is a `FieldOutOfRange` naming it.
PROTOCOL.md (docs/protocol/link.md) gives the bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import ClassVar

import attrs

from ped.errors import FieldOutOfRange, LocalProtocolError, UnknownFrameType
from ped.wire.codec import Reader, Writer
from ped.wire.framing import Frame
from ped.wire.types import E2E_RANGE, CloseCode

#: Link protocol versions this code speaks.  A peer whose range does not reach
#: `LINK_VERSION_MIN` is refused: there is no downgrade below our minimum.
LINK_VERSION_MIN = 1
LINK_VERSION_MAX = 3
#: The first link version whose OP_BEGIN may announce the HSM's operation timeout: a
#: version 1 peer refuses a byte after ``wait_ms``, so nobody sends it on a version 1 link.
OP_TIMEOUT_VERSION = 2
#: The first link version on which the initiator may send end-to-end frames behind its
#: OP_BEGIN before the answer (one round trip per PED operation): an older peer would
#: take them for a protocol error, so nobody pipelines on an older link.
PIPELINE_VERSION = 3

DEFAULT_PORT = 1503
DEFAULT_IDLE_TIMEOUT = 1800  # seconds; the shorter of both ends wins
MAX_IDLE_TIMEOUT = 99999
DEFAULT_KEEPALIVE_INTERVAL = 30  # seconds between keepalives on a quiet link
MAX_OP_WAIT_MS = 600_000  # the longest an HSM may ask to wait for a busy PED
MAX_OP_TIMEOUT = 99999  # seconds: the longest operation timeout (pedo) OP_BEGIN announces
MAX_NAME = 64
MAX_TEXT = 256
MAX_HOST = 255


class LinkType(enum.IntEnum):
    HELLO = 0x01
    WELCOME = 0x02
    REFUSED = 0x03
    OP_BEGIN = 0x04
    OP_GRANTED = 0x05
    BUSY = 0x06
    OP_END = 0x07
    KEEPALIVE = 0x08
    KEEPALIVE_ACK = 0x09
    CLOSE = 0x0A


class LocalType(enum.IntEnum):
    CONNECT_REQUEST = 0x40
    CONNECT_RESULT = 0x41


class RefuseCode(enum.IntEnum):
    UNSUPPORTED_VERSION = 1  # no link version in common
    TOO_MANY_LINKS = 2  # pedserver is at its link limit
    SHUTTING_DOWN = 3  # pedserver is stopping
    PROTOCOL_ERROR = 4  # the hello was malformed


class ConnectCode(enum.IntEnum):
    OK = 0
    REFUSED = 1  # TCP connection refused
    TIMEOUT = 2  # no answer in time
    UNREACHABLE = 3  # name does not resolve, no route
    LINK_REFUSED = 4  # pedserver answered with LinkRefused (text says why)
    PROTOCOL_ERROR = 5  # whatever answered is not a pedserver we can speak to
    PEER_UNAVAILABLE = 6  # peer-to-peer mode: no such registered peer connected
    TOO_MANY_LINKS = 7  # pedclient's own limit
    BAD_REQUEST = 8  # the request itself was not acceptable
    SHUTTING_DOWN = 9  # pedclient is stopping


#: Connect failures an HSM may simply retry later (network or daemon state, not config).
RETRIABLE_CONNECT_CODES = frozenset(
    {
        ConnectCode.REFUSED,
        ConnectCode.TIMEOUT,
        ConnectCode.UNREACHABLE,
        ConnectCode.TOO_MANY_LINKS,
        ConnectCode.SHUTTING_DOWN,
        ConnectCode.PEER_UNAVAILABLE,
        ConnectCode.LINK_REFUSED,
    }
)


def fit_text(text: str, limit: int = 200) -> str:
    """*text* made fit for a Close/refusal text field: printable, at most *limit* chars."""
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text(value: str, field: str, limit: int) -> str:
    if len(value.encode("utf-8")) > limit:
        raise LocalProtocolError(f"link field {field} is over {limit} bytes")
    if not value.isprintable():
        raise LocalProtocolError(f"link field {field} has control characters")
    return value


def _read_text(r: Reader, field: str, limit: int) -> str:
    value = r.text16(field, max_len=limit)
    if not value.isprintable():
        raise FieldOutOfRange(f"link field {field!r} has control characters")
    return value


def _enum(r: Reader, kind: type[enum.IntEnum], field: str, width: int = 16) -> enum.IntEnum:
    value = r.u16(field) if width == 16 else r.u8(field)
    try:
        return kind(value)
    except ValueError:
        raise FieldOutOfRange(f"link field {field!r} has unknown value {value}") from None


@attrs.frozen
class DeviceSummary:
    """What pedserver says about its PED (public facts only)."""

    connected: bool = False
    model: str = ""
    firmware: str = ""
    serial: str = ""
    mode: str = ""

    def write(self, w: Writer) -> None:
        w.u8(1 if self.connected else 0)
        for name in ("model", "firmware", "serial", "mode"):
            w.text16(_text(getattr(self, name), name, MAX_NAME))

    @classmethod
    def read(cls, r: Reader) -> DeviceSummary:
        connected = bool(r.u8("device connected", high=1))
        model, firmware, serial, mode = (
            _read_text(r, n, MAX_NAME) for n in ("model", "firmware", "serial", "mode")
        )
        return cls(connected, model, firmware, serial, mode)


# ------------------------------------------------------------------- pedclient <-> pedserver


@attrs.frozen
class LinkHello:
    """pedclient -> pedserver, first frame: versions spoken, idle timeout, who we are."""

    TYPE: ClassVar[int] = LinkType.HELLO
    min_version: int = LINK_VERSION_MIN
    max_version: int = LINK_VERSION_MAX
    idle_timeout: int = DEFAULT_IDLE_TIMEOUT
    client_name: str = ""

    def payload(self) -> bytes:
        return (
            Writer()
            .u8(self.min_version)
            .u8(self.max_version)
            .u32(self.idle_timeout)
            .text16(_text(self.client_name, "client name", MAX_NAME))
            .getvalue()
        )

    @classmethod
    def parse(cls, r: Reader) -> LinkHello:
        lo = r.u8("min version", low=1)
        hi = r.u8("max version", low=lo)
        idle = r.u32("idle timeout", low=1, high=MAX_IDLE_TIMEOUT)
        return cls(lo, hi, idle, _read_text(r, "client name", MAX_NAME))


@attrs.frozen
class LinkWelcome:
    """pedserver -> pedclient: the chosen version and idle timeout, and the PED."""

    TYPE: ClassVar[int] = LinkType.WELCOME
    version: int
    idle_timeout: int
    keepalive_interval: int = DEFAULT_KEEPALIVE_INTERVAL
    server_name: str = ""
    device: DeviceSummary = DeviceSummary()

    def payload(self) -> bytes:
        w = (
            Writer()
            .u8(self.version)
            .u32(self.idle_timeout)
            .u16(self.keepalive_interval)
            .text16(_text(self.server_name, "server name", MAX_NAME))
        )
        self.device.write(w)
        return w.getvalue()

    @classmethod
    def parse(cls, r: Reader) -> LinkWelcome:
        version = r.u8("version", low=1)
        idle = r.u32("idle timeout", low=1, high=MAX_IDLE_TIMEOUT)
        keepalive = r.u16("keepalive interval", low=1, high=3600)
        name = _read_text(r, "server name", MAX_NAME)
        return cls(version, idle, keepalive, name, DeviceSummary.read(r))


@attrs.frozen
class LinkRefused:
    """pedserver -> pedclient instead of a welcome; pedserver then closes."""

    TYPE: ClassVar[int] = LinkType.REFUSED
    code: RefuseCode
    text: str = ""

    def payload(self) -> bytes:
        return Writer().u16(self.code).text16(_text(self.text, "text", MAX_TEXT)).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> LinkRefused:
        code = _enum(r, RefuseCode, "refuse code")
        return cls(RefuseCode(code), _read_text(r, "text", MAX_TEXT))


@attrs.frozen
class OpBegin:
    """Take the PED for one handshake or operation; wait up to *wait_ms* if it is busy.

    *op_timeout* (seconds, link version 2 on): the HSM's operation timeout (pedo) for
    what this hold carries, so that pedserver can end a hold the HSM has given up on;
    None (version 1, or an HSM that does not say) leaves pedserver's fixed bound.
    """

    TYPE: ClassVar[int] = LinkType.OP_BEGIN
    wait_ms: int = 0
    op_timeout: int | None = None

    def payload(self) -> bytes:
        if not 0 <= self.wait_ms <= MAX_OP_WAIT_MS:
            raise LocalProtocolError(f"OpBegin wait must be 0-{MAX_OP_WAIT_MS} ms")
        w = Writer().u32(self.wait_ms)
        if self.op_timeout is not None:
            if not 1 <= self.op_timeout <= MAX_OP_TIMEOUT:
                raise LocalProtocolError(f"OpBegin operation timeout must be 1-{MAX_OP_TIMEOUT} s")
            w.u32(self.op_timeout)
        return w.getvalue()

    @classmethod
    def parse(cls, r: Reader) -> OpBegin:
        wait = r.u32("wait ms", high=MAX_OP_WAIT_MS)
        if not r.remaining():
            return cls(wait)
        return cls(wait, r.u32("operation timeout", low=1, high=MAX_OP_TIMEOUT))


@attrs.frozen
class OpGranted:
    """The PED is ours until OpEnd."""

    TYPE: ClassVar[int] = LinkType.OP_GRANTED

    def payload(self) -> bytes:
        return b""

    @classmethod
    def parse(cls, r: Reader) -> OpGranted:
        return cls()


@attrs.frozen
class Busy:
    """The PED serves someone else; *holder* says who (non-secret, for the operator)."""

    TYPE: ClassVar[int] = LinkType.BUSY
    holder: str = ""

    def payload(self) -> bytes:
        return Writer().text16(_text(self.holder, "holder", MAX_TEXT)).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> Busy:
        return cls(_read_text(r, "holder", MAX_TEXT))


@attrs.frozen
class OpEnd:
    """Give the PED back."""

    TYPE: ClassVar[int] = LinkType.OP_END

    def payload(self) -> bytes:
        return b""

    @classmethod
    def parse(cls, r: Reader) -> OpEnd:
        return cls()


@attrs.frozen
class Keepalive:
    TYPE: ClassVar[int] = LinkType.KEEPALIVE
    nonce: int = 0

    def payload(self) -> bytes:
        return Writer().u32(self.nonce).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> Keepalive:
        return cls(r.u32("nonce"))


@attrs.frozen
class KeepaliveAck:
    TYPE: ClassVar[int] = LinkType.KEEPALIVE_ACK
    nonce: int = 0

    def payload(self) -> bytes:
        return Writer().u32(self.nonce).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> KeepaliveAck:
        return cls(r.u32("nonce"))


@attrs.frozen
class Close:
    """Either side, last frame: why the link ends."""

    TYPE: ClassVar[int] = LinkType.CLOSE
    code: CloseCode = CloseCode.NORMAL
    text: str = ""

    def payload(self) -> bytes:
        return Writer().u16(self.code).text16(_text(self.text, "text", MAX_TEXT)).getvalue()

    @classmethod
    def parse(cls, r: Reader) -> Close:
        code = _enum(r, CloseCode, "close code")
        return cls(CloseCode(code), _read_text(r, "text", MAX_TEXT))


# ------------------------------------------------------------------------ HSM <-> pedclient


class TargetKind(enum.IntEnum):
    ADDRESS = 1  # standard mode: pedclient dials host:port
    PEER = 2  # peer-to-peer mode: a registered pedserver that dials pedclient


@attrs.frozen
class ConnectRequest:
    """HSM -> pedclient, first frame: "connect me to pedserver A:P" (or to a named peer)."""

    TYPE: ClassVar[int] = LocalType.CONNECT_REQUEST
    host: str = ""
    port: int = DEFAULT_PORT
    peer: str = ""
    idle_timeout: int = DEFAULT_IDLE_TIMEOUT
    hsm_name: str = ""
    connect_timeout_ms: int = 10_000

    @property
    def kind(self) -> TargetKind:
        return TargetKind.PEER if self.peer else TargetKind.ADDRESS

    @property
    def target(self) -> str:
        """How to name the target to a person."""
        if self.peer:
            return f"peer {self.peer!r}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def payload(self) -> bytes:
        if bool(self.peer) == bool(self.host):
            raise LocalProtocolError("ConnectRequest names either a host or a peer, not both")
        if not 1 <= self.port <= 0xFFFF:
            raise LocalProtocolError(f"port {self.port} is not 1-65535")
        return (
            Writer()
            .u8(self.kind)
            .text16(_text(self.host, "host", MAX_HOST))
            .u16(self.port)
            .text16(_text(self.peer, "peer", MAX_NAME))
            .u32(self.idle_timeout)
            .text16(_text(self.hsm_name, "hsm name", MAX_NAME))
            .u32(self.connect_timeout_ms)
            .getvalue()
        )

    @classmethod
    def parse(cls, r: Reader) -> ConnectRequest:
        kind = TargetKind(_enum(r, TargetKind, "target kind", width=8))
        host = _read_text(r, "host", MAX_HOST)
        port = r.u16("port", low=1)
        peer = _read_text(r, "peer", MAX_NAME)
        if (kind is TargetKind.ADDRESS) != bool(host) or (kind is TargetKind.PEER) != bool(peer):
            raise FieldOutOfRange("ConnectRequest: target kind does not match host/peer fields")
        idle = r.u32("idle timeout", low=1, high=MAX_IDLE_TIMEOUT)
        name = _read_text(r, "hsm name", MAX_NAME)
        timeout = r.u32("connect timeout ms", low=1, high=600_000)
        return cls(host, port, peer, idle, name, timeout)


@attrs.frozen
class ConnectResult:
    """pedclient -> HSM: the link is up (with what pedserver said), or why not."""

    TYPE: ClassVar[int] = LocalType.CONNECT_RESULT
    code: ConnectCode = ConnectCode.OK
    text: str = ""
    version: int = 0
    idle_timeout: int = 0
    server_name: str = ""
    device: DeviceSummary = DeviceSummary()

    @property
    def ok(self) -> bool:
        return self.code is ConnectCode.OK

    def payload(self) -> bytes:
        w = (
            Writer()
            .u16(self.code)
            .text16(_text(self.text, "text", MAX_TEXT))
            .u8(self.version)
            .u32(self.idle_timeout)
            .text16(_text(self.server_name, "server name", MAX_NAME))
        )
        self.device.write(w)
        return w.getvalue()

    @classmethod
    def parse(cls, r: Reader) -> ConnectResult:
        code = ConnectCode(_enum(r, ConnectCode, "connect code"))
        text = _read_text(r, "text", MAX_TEXT)
        version = r.u8("version")
        idle = r.u32("idle timeout", high=MAX_IDLE_TIMEOUT)
        name = _read_text(r, "server name", MAX_NAME)
        device = DeviceSummary.read(r)
        if code is ConnectCode.OK and (version < 1 or idle < 1):
            raise FieldOutOfRange("ConnectResult: OK without a version and idle timeout")
        return cls(code, text, version, idle, name, device)


# ---------------------------------------------------------------------- relayed e2e frames


@attrs.frozen(repr=False)
class EndToEnd:
    """An end-to-end frame (0x20-0x2F) relayed untouched; its payload is never looked at."""

    frame: Frame = attrs.field()

    @frame.validator
    def _check(self, _attribute: object, frame: Frame) -> None:
        if frame.type not in E2E_RANGE:
            raise LocalProtocolError(f"frame type 0x{frame.type:02x} is not end-to-end")

    @property
    def TYPE(self) -> int:
        return self.frame.type

    def __repr__(self) -> str:
        return f"EndToEnd({self.frame!r})"


LinkMessage = (
    LinkHello | LinkWelcome | LinkRefused | OpBegin | OpGranted | Busy | OpEnd
    | Keepalive | KeepaliveAck | Close
)
LocalMessage = ConnectRequest | ConnectResult
Message = LinkMessage | LocalMessage | EndToEnd

#: frame type -> (message name for errors, its parser)
_PARSERS: dict[int, tuple[str, Callable[[Reader], LinkMessage | LocalMessage]]] = {
    cls.TYPE: (cls.__name__, cls.parse)
    for cls in (
        LinkHello, LinkWelcome, LinkRefused, OpBegin, OpGranted, Busy, OpEnd,
        Keepalive, KeepaliveAck, Close, ConnectRequest, ConnectResult,
    )
}


def encode(message: Message) -> Frame:
    """The frame carrying *message* (an `EndToEnd` gives back its own frame)."""
    if isinstance(message, EndToEnd):
        return message.frame
    return Frame(message.TYPE, message.payload())


def decode(frame: Frame) -> Message:
    """The message in *frame*; `RemoteProtocolError` subclasses for anything malformed."""
    if frame.type in E2E_RANGE:
        return EndToEnd(frame)
    parser = _PARSERS.get(frame.type)
    if parser is None:
        raise UnknownFrameType(f"frame type 0x{frame.type:02x} is not a link message")
    name, parse = parser
    reader = Reader(frame.payload, what=name)
    message = parse(reader)
    reader.finish()
    return message
