"""PED operation messages (0x50-0x6F): what travels inside the end-to-end channel.

Theory of operation
-------------------
Each message is a frozen attrs class with a pure `encode` (to frame bytes) and a
`decode_message` that turns frame bytes back into the class.  The bytes are an ordinary
frame (``ped.wire.framing``) whose type is an `OpType`; that whole frame is the plaintext
of one ``SEALED`` end-to-end frame.  Field layouts are in PROTOCOL.md.

Requests carry an operation id (u32, 1-2**32-1) chosen by the HSM; every response
carries the id of the request it answers.  Constructors validate ranges and raise
`LocalProtocolError`; decoding raises only `RemoteProtocolError` subclasses
(`FieldOutOfRange`, `TruncatedFrame`, `TrailingBytes`, `UnknownFrameType`...).

Text fields never carry control characters: labels and the PED screen message have them
replaced by '?' (newlines kept on the screen message), and informational texts (notice,
error detail, goodbye) are also cut to 256 UTF-8 bytes, so a hostile peer cannot send
terminal escapes to a PED screen or an HSM log.

Secret fields (derived secrets) are ``bytearray``s, hidden from ``repr`` and wiped by
``wipe()``; the encoded bytes are necessarily an immutable copy that the caller seals
and drops at once.
"""

from __future__ import annotations

import enum
from typing import ClassVar, Self, TypeAlias

import attrs

from keys.colors import Color
from ped.errors import FieldOutOfRange, LocalProtocolError
from ped.ops.errors import ErrorCode
from ped.wire.codec import Reader, Writer
from ped.wire.framing import Frame, decode_frame, encode_frame
from ped.wire.types import OPS_TYPES, OpType

SECRET_SIZE = 32
KEYSET_ID_SIZE = 16
MAX_OP_ID = 0xFFFFFFFF
LABEL_MAX = 128
TEXT_MAX = 512
DETAIL_MAX = 256
MAX_M_N = 16
MAX_KEY_TIMEOUT_MS = 86_400_000
#: Largest plaintext frame payload of any operation message.
MAX_OP_PAYLOAD = 2048


class NoticeKind(enum.IntEnum):
    """What a progress notice from the PED says (informational, never needed)."""

    ATTEND = 1  # "Please attend to the PED."
    INSERT_KEY = 2  # waiting for key *step* of *total*
    ENTER_PIN = 3  # waiting for the PED PIN
    KEY_ACCEPTED = 4  # key *step* of *total* read
    WRITING_KEY = 5  # writing key *step* of *total*
    QUESTION = 6  # the operator is answering a question (reuse? M of N? ...)
    INFO = 7  # free text


class CloseReason(enum.IntEnum):
    NORMAL = 0
    IDLE_TIMEOUT = 1
    SHUTDOWN = 2
    PROTOCOL_ERROR = 3


# ---- validators ---------------------------------------------------------------------


def _range(low: int, high: int, what: str):  # type: ignore[no-untyped-def]
    def check(_inst: object, _attr: object, value: int) -> None:
        if not isinstance(value, int) or not low <= value <= high:
            raise LocalProtocolError(f"{what} must be {low}-{high}; got {value!r}")

    return check


def _text(max_len: int, what: str):  # type: ignore[no-untyped-def]
    def check(_inst: object, _attr: object, value: str) -> None:
        if len(value.encode("utf-8")) > max_len:
            raise LocalProtocolError(f"{what} is over {max_len} UTF-8 bytes; shorten it")

    return check


def clean_text(text: str, *, newlines: bool = False) -> str:
    """Replace control characters (terminal escapes, NUL...) with '?'.

    Text crosses a trust boundary in both directions and ends on a PED screen or in an
    HSM log; neither should interpret it.  Newlines are kept only where asked (the PED
    screen message).
    """
    if text.isprintable():  # the usual case: nothing to replace
        return text
    return "".join(c if c.isprintable() or (newlines and c == "\n") else "?" for c in text)


def clip_text(text: str, max_bytes: int) -> str:
    """*text* cleaned and cut to at most *max_bytes* UTF-8 bytes at a character boundary."""
    data = clean_text(text).encode("utf-8")[:max_bytes]
    return data.decode("utf-8", errors="ignore")


def _clean(text: str) -> str:
    return clean_text(str(text))


def _clean_lines(text: str) -> str:
    return clean_text(str(text), newlines=True)


def _clip_detail(text: str) -> str:
    return clip_text(str(text), DETAIL_MAX)


def _sized(size: int, what: str, *, optional: bool = False):  # type: ignore[no-untyped-def]
    def check(_inst: object, _attr: object, value: bytes | None) -> None:
        if value is None and optional:
            return
        if value is None or len(value) != size:
            raise LocalProtocolError(f"{what} must be exactly {size} bytes")

    return check


def _opt_bytes(value: bytes | None) -> bytes | None:
    return None if value is None else bytes(value)


def _opt_secret(value: bytes | bytearray | None) -> bytearray | None:
    return None if value is None else bytearray(value)


_OP_ID = _range(1, MAX_OP_ID, "operation id")
_TIMEOUT = _range(1, MAX_KEY_TIMEOUT_MS, "key timeout (ms)")


def _to_color(value: int) -> Color:
    try:
        return Color(value)
    except ValueError:
        raise LocalProtocolError(f"{value!r} is not a PED key colour code (1-7)") from None


def _wipe(buffer: bytearray | None) -> None:
    if buffer is not None:
        buffer[:] = bytes(len(buffer))


class _Message:
    TYPE: ClassVar[OpType]

    def payload(self) -> bytes:
        raise NotImplementedError

    def encode(self) -> bytes:
        """The frame bytes of this message (the plaintext to seal)."""
        return encode_frame(Frame(self.TYPE, self.payload()))


@attrs.frozen
class _OpIdOnly(_Message):
    """A message that is nothing but an operation id (CANCEL, SHOW_DONE)."""

    op_id: int = attrs.field(validator=_OP_ID)

    def payload(self) -> bytes:
        return Writer().u32(self.op_id).getvalue()

    @classmethod
    def read(cls, r: Reader) -> Self:
        return cls(_read_op_id(r))


@attrs.frozen
class _KeysetResult(_Message):
    """The head READ_RESULT and IMPRINT_RESULT share: the operation, the colour, the
    keyset and its M of N."""

    op_id: int = attrs.field(validator=_OP_ID)
    color: Color = attrs.field(converter=_to_color)
    keyset_id: bytes = attrs.field(converter=bytes, validator=_sized(KEYSET_ID_SIZE, "keyset id"))
    m: int = attrs.field(validator=_range(1, MAX_M_N, "M"))
    n: int = attrs.field(validator=_range(1, MAX_M_N, "N"))

    def __attrs_post_init__(self) -> None:
        if self.m > self.n:
            raise LocalProtocolError(f"M ({self.m}) cannot exceed N ({self.n})")

    def _head(self) -> Writer:
        w = Writer().u32(self.op_id).u8(self.color).raw(self.keyset_id)
        return w.u8(self.m).u8(self.n)

    @staticmethod
    def _read_head(r: Reader) -> tuple[int, Color, bytes, int, int]:
        op_id, color = _read_op_id(r), _read_color(r)
        keyset = r.raw(KEYSET_ID_SIZE, "keyset id")
        return op_id, color, keyset, r.u8("m", low=1, high=MAX_M_N), r.u8("n", low=1, high=MAX_M_N)


# ---- requests (HSM -> PED) -----------------------------------------------------------


@attrs.frozen
class ReadSecret(_Message):
    """Ask the PED for the secret of a *color* key (M of N and PIN handled on the PED)."""

    TYPE: ClassVar[OpType] = OpType.READ_SECRET
    op_id: int = attrs.field(validator=_OP_ID)
    color: Color = attrs.field(converter=_to_color)
    keyset_id: bytes | None = attrs.field(
        default=None,
        converter=_opt_bytes,
        validator=_sized(KEYSET_ID_SIZE, "keyset id", optional=True),
    )
    label: str = attrs.field(default="", converter=_clean, validator=_text(LABEL_MAX, "label"))
    key_timeout_ms: int = attrs.field(default=200_000, validator=_TIMEOUT)

    def payload(self) -> bytes:
        w = Writer().u32(self.op_id).u8(self.color).u32(self.key_timeout_ms)
        if self.keyset_id is None:
            w.u8(0)
        else:
            w.u8(1).raw(self.keyset_id)
        return w.text16(self.label).getvalue()

    @classmethod
    def read(cls, r: Reader) -> ReadSecret:
        op_id, color, timeout = _read_op_id(r), _read_color(r), _read_timeout(r)
        keyset = r.raw(KEYSET_ID_SIZE, "keyset id") if r.u8("has keyset", high=1) else None
        return cls(op_id, color, keyset, r.text16("label", max_len=LABEL_MAX), timeout)


@attrs.frozen
class ImprintRequest(_Message):
    """Ask the PED to imprint *color* keys.

    ``new_secret``: the secret to write (the PED asks M of N, PIN and duplicates).
    ``allow_reuse``: the PED may ask "reuse an existing keyset?" and, on yes, read that
    keyset's secret, return it in the result and imprint it instead.  With no new secret
    reuse is the only way (e.g. several HSMs sharing one RPV).
    """

    TYPE: ClassVar[OpType] = OpType.IMPRINT
    op_id: int = attrs.field(validator=_OP_ID)
    color: Color = attrs.field(converter=_to_color)
    new_secret: bytearray | None = attrs.field(
        default=None,
        converter=_opt_secret,
        validator=_sized(SECRET_SIZE, "new secret", optional=True),
        repr=False,
    )
    allow_reuse: bool = attrs.field(default=False, converter=bool)
    label: str = attrs.field(default="", converter=_clean, validator=_text(LABEL_MAX, "label"))
    key_timeout_ms: int = attrs.field(default=200_000, validator=_TIMEOUT)

    def __attrs_post_init__(self) -> None:
        if self.new_secret is None and not self.allow_reuse:
            raise LocalProtocolError(
                "an imprint needs a new secret, or allow_reuse=True to read an existing keyset"
            )

    def payload(self) -> bytes:
        flags = (1 if self.allow_reuse else 0) | (2 if self.new_secret is not None else 0)
        w = Writer().u32(self.op_id).u8(self.color).u32(self.key_timeout_ms).u8(flags)
        w.text16(self.label)
        if self.new_secret is not None:
            w.raw(self.new_secret)
        return w.getvalue()

    @classmethod
    def read(cls, r: Reader) -> ImprintRequest:
        op_id, color, timeout = _read_op_id(r), _read_color(r), _read_timeout(r)
        flags = r.u8("flags", high=3)
        label = r.text16("label", max_len=LABEL_MAX)
        secret = bytearray(r.raw(SECRET_SIZE, "new secret")) if flags & 2 else None
        return cls(op_id, color, secret, bool(flags & 1), label, timeout)

    def wipe(self) -> None:
        _wipe(self.new_secret)


@attrs.frozen
class ShowMessage(_Message):
    """Show *text* on the PED screen (the PED answers SHOW_DONE once it is displayed)."""

    TYPE: ClassVar[OpType] = OpType.SHOW_MESSAGE
    op_id: int = attrs.field(validator=_OP_ID)
    text: str = attrs.field(converter=_clean_lines, validator=_text(TEXT_MAX, "message text"))

    def payload(self) -> bytes:
        return Writer().u32(self.op_id).text16(self.text).getvalue()

    @classmethod
    def read(cls, r: Reader) -> ShowMessage:
        return cls(_read_op_id(r), r.text16("text", max_len=TEXT_MAX))


@attrs.frozen
class Cancel(_OpIdOnly):
    """Cancel operation *op_id*.  Never answered by itself: the operation ends with
    OP_ERROR(CANCELLED), or with its result if it finished first."""

    TYPE: ClassVar[OpType] = OpType.CANCEL


# ---- responses (PED -> HSM) ----------------------------------------------------------


@attrs.frozen
class ReadResult(_KeysetResult):
    """The derived secret of a keyset (after M of N and PIN), with non-secret metadata."""

    TYPE: ClassVar[OpType] = OpType.READ_RESULT
    secret: bytearray = attrs.field(
        converter=bytearray, validator=_sized(SECRET_SIZE, "secret"), repr=False
    )

    def payload(self) -> bytes:
        return self._head().raw(self.secret).getvalue()

    @classmethod
    def read(cls, r: Reader) -> ReadResult:
        return cls(*cls._read_head(r), bytearray(r.raw(SECRET_SIZE, "secret")))

    def wipe(self) -> None:
        _wipe(self.secret)


@attrs.frozen
class ImprintResult(_KeysetResult):
    """Keys were imprinted.

    ``secret`` is the *login secret*: what a READ_SECRET of this keyset will return (after
    M of N and the PED PIN).  It is present whenever the HSM cannot know it already:
    always when an existing keyset was ``reused``, always when a PED ``pin`` was set (the
    PIN is mixed into the secret).  Absent, the login secret is the new secret the HSM
    sent.
    """

    TYPE: ClassVar[OpType] = OpType.IMPRINT_RESULT
    pin: bool = attrs.field(converter=bool)
    copies: int = attrs.field(validator=_range(0, 255, "copies written"))
    reused: bool = attrs.field(default=False, converter=bool)
    secret: bytearray | None = attrs.field(
        default=None,
        converter=_opt_secret,
        validator=_sized(SECRET_SIZE, "login secret", optional=True),
        repr=False,
    )

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if not self.reused and self.copies == 0:
            raise LocalProtocolError("a new keyset must have been written to at least one key")
        if (self.reused or self.pin) and self.secret is None:
            raise LocalProtocolError(
                "a reused or PIN-protected keyset needs its login secret in the result: "
                "the HSM cannot compute it"
            )

    def payload(self) -> bytes:
        flags = (
            (1 if self.pin else 0)
            | (2 if self.reused else 0)
            | (4 if self.secret is not None else 0)
        )
        w = self._head().u8(flags).u8(self.copies)
        if self.secret is not None:
            w.raw(self.secret)
        return w.getvalue()

    @classmethod
    def read(cls, r: Reader) -> ImprintResult:
        head = cls._read_head(r)
        flags = r.u8("flags", high=7)
        copies = r.u8("copies")
        secret = bytearray(r.raw(SECRET_SIZE, "login secret")) if flags & 4 else None
        return cls(*head, bool(flags & 1), copies, bool(flags & 2), secret)

    def wipe(self) -> None:
        _wipe(self.secret)


@attrs.frozen
class ShowDone(_OpIdOnly):
    """The message of operation *op_id* is on the PED screen."""

    TYPE: ClassVar[OpType] = OpType.SHOW_DONE


@attrs.frozen
class Notice(_Message):
    """Progress of operation *op_id* (optional; the HSM may show it, e.g. 'key 2 of 3')."""

    TYPE: ClassVar[OpType] = OpType.NOTICE
    op_id: int = attrs.field(validator=_OP_ID)
    kind: NoticeKind = attrs.field(converter=NoticeKind)
    step: int = attrs.field(default=0, validator=_range(0, 255, "step"))
    total: int = attrs.field(default=0, validator=_range(0, 255, "total"))
    text: str = attrs.field(default="", converter=_clip_detail)

    def payload(self) -> bytes:
        w = Writer().u32(self.op_id).u8(self.kind).u8(self.step).u8(self.total)
        return w.text16(self.text).getvalue()

    @classmethod
    def read(cls, r: Reader) -> Notice:
        op_id = _read_op_id(r)
        kind = r.u8("kind", low=min(NoticeKind), high=max(NoticeKind))
        return cls(op_id, kind, r.u8("step"), r.u8("total"), r.text16("text", max_len=DETAIL_MAX))


@attrs.frozen
class OpError(_Message):
    """Operation *op_id* failed with *code*; *detail* is non-secret text for the log."""

    TYPE: ClassVar[OpType] = OpType.OP_ERROR
    op_id: int = attrs.field(validator=_OP_ID)
    code: ErrorCode = attrs.field(converter=ErrorCode)
    detail: str = attrs.field(default="", converter=_clip_detail)

    def payload(self) -> bytes:
        return Writer().u32(self.op_id).u16(self.code).text16(self.detail).getvalue()

    @classmethod
    def read(cls, r: Reader) -> OpError:
        op_id = _read_op_id(r)
        code = r.u16("code", low=min(ErrorCode), high=max(ErrorCode))
        return cls(op_id, code, r.text16("detail", max_len=DETAIL_MAX))


@attrs.frozen
class Goodbye(_Message):
    """Either end is closing the session (sent sealed, so it cannot be forged)."""

    TYPE: ClassVar[OpType] = OpType.GOODBYE
    reason: CloseReason = attrs.field(default=CloseReason.NORMAL, converter=CloseReason)
    text: str = attrs.field(default="", converter=_clip_detail)

    def payload(self) -> bytes:
        return Writer().u8(self.reason).text16(self.text).getvalue()

    @classmethod
    def read(cls, r: Reader) -> Goodbye:
        reason = r.u8("reason", low=min(CloseReason), high=max(CloseReason))
        return cls(reason, r.text16("text", max_len=DETAIL_MAX))


Request: TypeAlias = ReadSecret | ImprintRequest | ShowMessage
Response: TypeAlias = ReadResult | ImprintResult | ShowDone | OpError
OpMessage: TypeAlias = (
    ReadSecret
    | ImprintRequest
    | ShowMessage
    | Cancel
    | ReadResult
    | ImprintResult
    | ShowDone
    | Notice
    | OpError
    | Goodbye
)

MESSAGE_CLASSES: dict[int, type[_Message]] = {
    cls.TYPE: cls
    for cls in (
        ReadSecret,
        ImprintRequest,
        ShowMessage,
        Cancel,
        ReadResult,
        ImprintResult,
        ShowDone,
        Notice,
        OpError,
        Goodbye,
    )
}
assert set(MESSAGE_CLASSES) == set(OPS_TYPES)


def _read_op_id(r: Reader) -> int:
    return r.u32("op id", low=1)


_COLOR_LOW, _COLOR_HIGH = min(Color), max(Color)


def _read_color(r: Reader) -> Color:
    return Color(r.u8("colour", low=_COLOR_LOW, high=_COLOR_HIGH))


def _read_timeout(r: Reader) -> int:
    return r.u32("key timeout ms", low=1, high=MAX_KEY_TIMEOUT_MS)


_OP_NAMES = {int(t): t.name for t in OpType}


def encode_message(message: OpMessage) -> bytes:
    """Frame bytes of *message* (pure)."""
    return message.encode()


def decode_message(data: bytes) -> OpMessage:
    """Decode one operation message; only `RemoteProtocolError` subclasses escape."""
    frame = decode_frame(data, accepted=OPS_TYPES, max_payload=MAX_OP_PAYLOAD)
    cls = MESSAGE_CLASSES[frame.type]
    reader = Reader(frame.payload, what=_OP_NAMES[frame.type])
    try:
        message = cls.read(reader)  # type: ignore[attr-defined]
    except LocalProtocolError as exc:
        # A constructor refused a combination the field reads alone allowed (M > N...).
        raise FieldOutOfRange(f"{OpType(frame.type).name}: {exc}") from None
    reader.finish()
    return message  # type: ignore[no-any-return]
