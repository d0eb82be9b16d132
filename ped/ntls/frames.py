"""The bytes of the client protocol: messages to frames and back, and frame reassembly.

Theory of operation
-------------------
Frames use the ``RP`` envelope of every hop (``ped.wire.framing``: magic, version, type,
u32 length, payload) with the client protocol's types 0x70-0x76.  `encode` gives a
``bytearray``; `FrameBuffer` reassembles frames from what TLS delivers, checks each
header as soon as it is in (a length over `MAX_FRAME` is refused before a payload byte
is buffered), and hands out each payload as a ``bytearray``, wiping its own copy; `decode`
turns a payload into a message.  A `Login`'s challenge is the last field of its frame, so
it is read straight out of the payload into a new ``bytearray`` (no immutable copy of it
is ever made here); the connection wipes the payload, the caller wipes the pin.
Typed values are written by ``ped.ntls.values`` only.  Every flaw in the peer's bytes is a
`RemoteProtocolError` naming the field, never its content.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TypeGuard

from ped.errors import (
    BadMagic,
    FieldOutOfRange,
    FrameTooLarge,
    LocalProtocolError,
    TrailingBytes,
    TruncatedFrame,
    UnknownFrameType,
    UnsupportedVersion,
)
from ped.ntls import values as v
from ped.ntls.messages import (
    MAX_ARCHIVE_LABEL,
    MAX_ARCHIVE_LABELS,
    MAX_ARCHIVE_NAME,
    MAX_CLONE_HANDLES,
    MAX_IN_FLIGHT,
    MAX_SOFTWARE,
    MAX_TEXT,
    NTLS_VERSION_MIN,
    REQUEST_TYPES,
    RESULT_OF,
    Answer,
    Archive,
    ArchiveAction,
    ArchiveMode,
    Attributes,
    CloneFrame,
    CloneOpen,
    CloneRole,
    Close,
    CloseSession,
    Decrypt,
    DestroyObject,
    Done,
    Encrypt,
    Failure,
    FindObjects,
    FrameType,
    GenerateKey,
    GenerateKeyPair,
    GenerateRandom,
    GetAttributes,
    GetMechanisms,
    GetTokenInfo,
    Handle,
    Handles,
    Hello,
    KeyOperation,
    KeyPair,
    ListPartitions,
    Login,
    Logout,
    Mechanisms,
    Message,
    NtlsCloseCode,
    NtlsRefuseCode,
    Op,
    OpenSession,
    Output,
    Partitions,
    Refused,
    Request,
    Result,
    Sign,
    TokenInfoResult,
    Verify,
    Welcome,
    op_of,
)
from ped.wire.codec import Reader, Writer
from ped.wire.framing import HEADER, MAGIC, WIRE_VERSION

#: The largest payload of any client-protocol frame (a sign or encrypt of `v.MAX_DATA`
#: with its mechanism, or a template of `v.MAX_TEMPLATE` attributes, fits).
MAX_FRAME = 64 * 1024


_LOGIN_HEAD = struct.Struct(">IBQIH")  # request id, op, session, user type, pin length


def _write_request(w: Writer, m: Request) -> None:
    w.u32(m.request_id).u8(m.OP)
    if isinstance(m, GetTokenInfo | GetMechanisms):
        v.write_serial(w, m.serial)
    elif isinstance(m, OpenSession):
        v.write_serial(w, m.serial)
        w.u8(int(m.read_write))
    elif isinstance(m, CloseSession | Logout):
        w.u64(m.session)
    elif isinstance(m, GenerateKey):
        w.u64(m.session)
        v.write_mechanism(w, m.mechanism)
        v.write_template(w, m.template)
    elif isinstance(m, GenerateKeyPair):
        w.u64(m.session)
        v.write_mechanism(w, m.mechanism)
        v.write_template(w, m.public_template)
        v.write_template(w, m.private_template)
    elif isinstance(m, FindObjects):
        w.u64(m.session)
        v.write_template(w, m.template)
    elif isinstance(m, GetAttributes):
        w.u64(m.session).u64(m.handle)
        v.write_types(w, m.types)
    elif isinstance(m, DestroyObject):
        w.u64(m.session).u64(m.handle)
    elif isinstance(m, KeyOperation | Verify):
        w.u64(m.session)
        v.write_mechanism(w, m.mechanism)
        w.u64(m.key)
        _write_data(w, m.data, v.MAX_DATA)
        if isinstance(m, Verify):
            _write_data(w, m.signature, v.MAX_OUTPUT)
    elif isinstance(m, GenerateRandom):
        if not 0 <= m.length <= v.MAX_RANDOM:
            raise LocalProtocolError(f"random length {m.length} over {v.MAX_RANDOM}")
        w.u64(m.session).u32(m.length)
    elif isinstance(m, CloneOpen):
        if len(m.handles) > MAX_CLONE_HANDLES:
            raise LocalProtocolError(f"a clone names at most {MAX_CLONE_HANDLES} objects")
        w.u64(m.session).u8(m.role)
        v.write_serial(w, m.peer_serial)
        w.u32(len(m.handles))
        for h in m.handles:
            w.u64(h)
    elif isinstance(m, CloneFrame):
        w.u64(m.session)
        _write_data(w, m.frames, v.MAX_OUTPUT)
    elif isinstance(m, Archive):
        if len(m.labels) > MAX_ARCHIVE_LABELS:
            raise LocalProtocolError(f"an archive names at most {MAX_ARCHIVE_LABELS} labels")
        w.u64(m.session).u8(m.action).u8(m.mode)
        v.write_serial(w, m.peer_serial)
        v.write_text(w, m.name, MAX_ARCHIVE_NAME, "backup partition name")
        w.u16(len(m.labels))
        for label in m.labels:
            v.write_text(w, label, MAX_ARCHIVE_LABEL, "label")


def _write_data(w: Writer, data: bytes, limit: int) -> None:
    if len(data) > limit:
        raise LocalProtocolError(f"{len(data)} bytes of data, over the {limit}-byte limit")
    w.u32(len(data)).raw(data)


def _read_data(r: Reader, field: str, limit: int) -> bytes:
    return r.raw(r.u32(f"{field} length", high=limit), field)


def _write_answer(w: Writer, m: Answer, version: int) -> None:
    if isinstance(m, Failure):
        w.u32(m.request_id).u32(m.rv)
        v.write_text(w, m.message, MAX_TEXT, "message")
        return
    w.u32(m.request_id).u8(op_of(m))
    if isinstance(m, Handle):
        w.u64(m.handle)
    elif isinstance(m, KeyPair):
        w.u64(m.public).u64(m.private)
    elif isinstance(m, Handles):
        if len(m.handles) > v.MAX_HANDLES:
            raise LocalProtocolError(f"{len(m.handles)} handles, over {v.MAX_HANDLES}")
        w.u32(len(m.handles))
        for h in m.handles:
            w.u64(h)
    elif isinstance(m, Attributes):
        v.write_results(w, m.results)
    elif isinstance(m, Output):
        _write_data(w, m.data, v.MAX_OUTPUT)
    elif isinstance(m, Partitions):
        v.write_partitions(w, m.partitions, version)
    elif isinstance(m, TokenInfoResult):
        v.write_token_info(w, m.info)
    elif isinstance(m, Mechanisms):
        v.write_mechanism_infos(w, m.infos)


def is_request(message: Message) -> TypeGuard[Request]:
    return isinstance(message, REQUEST_TYPES)


def encode(message: Message, version: int = NTLS_VERSION_MIN) -> bytearray:
    """The frame of *message* as a ``bytearray`` (wipe it after sending a `Login`), as the
    connection's negotiated *version* has it."""
    if isinstance(message, Login):
        if len(message.pin) > v.MAX_PIN:
            raise LocalProtocolError(f"a challenge is at most {v.MAX_PIN} bytes")
        head = _LOGIN_HEAD.pack(
            message.request_id, Op.LOGIN, message.session, message.user_type, len(message.pin)
        )
        out = bytearray(HEADER.pack(MAGIC, WIRE_VERSION, FrameType.REQUEST, 0))
        out += head
        out += message.pin
        out[4:8] = (len(out) - HEADER.size).to_bytes(4, "big")
        return out
    w = Writer()
    if isinstance(message, Hello):
        w.u16(message.version_min).u16(message.version_max)
        v.write_text(w, message.software, MAX_SOFTWARE, "software")
        type_ = FrameType.HELLO
    elif isinstance(message, Welcome):
        w.u16(message.version).u16(message.max_in_flight)
        v.write_serial(w, message.hsm_serial)
        type_ = FrameType.WELCOME
    elif isinstance(message, Refused | Close):
        w.u8(message.code)
        v.write_text(w, message.message, MAX_TEXT, "message")
        type_ = message.TYPE
    elif isinstance(message, Failure):
        _write_answer(w, message, version)
        type_ = FrameType.FAILURE
    elif is_request(message):
        _write_request(w, message)
        type_ = FrameType.REQUEST
    else:
        _write_answer(w, message, version)  # type: ignore[arg-type]  # the rest is an Answer
        type_ = FrameType.RESULT
    payload = w.getvalue()
    if len(payload) > MAX_FRAME:
        raise LocalProtocolError(
            f"a {type_.name} frame of {len(payload)} bytes is over {MAX_FRAME}"
        )
    return bytearray(HEADER.pack(MAGIC, WIRE_VERSION, type_, len(payload)) + payload)


# ---- decoding -----------------------------------------------------------------------


def _read_login(payload: bytearray) -> Login:
    if len(payload) < _LOGIN_HEAD.size:
        r = Reader(bytes(payload[: _LOGIN_HEAD.size]), what="login")
        r.raw(_LOGIN_HEAD.size, "login header")  # raises TruncatedFrame
    request_id, _op, session, user_type, pin_len = _LOGIN_HEAD.unpack_from(payload)
    if pin_len > v.MAX_PIN:
        raise FieldOutOfRange(f"login: the challenge is {pin_len} bytes; at most {v.MAX_PIN}")
    left = len(payload) - _LOGIN_HEAD.size
    if left != pin_len:
        if left < pin_len:
            Reader(b"", what="login").raw(pin_len, "challenge")  # raises TruncatedFrame
        raise TrailingBytes(f"login: {left - pin_len} bytes left after the last field")
    return Login(request_id, session, user_type, bytearray(payload[_LOGIN_HEAD.size :]))


def _read_request(r: Reader, request_id: int, op: Op) -> Request:
    if op is Op.LIST_PARTITIONS:
        return ListPartitions(request_id)
    if op is Op.TOKEN_INFO:
        return GetTokenInfo(request_id, v.read_serial(r))
    if op is Op.MECHANISMS:
        return GetMechanisms(request_id, v.read_serial(r))
    if op is Op.OPEN_SESSION:
        return OpenSession(request_id, v.read_serial(r), bool(r.u8("read-write", high=1)))
    session = r.u64("session")
    if op is Op.CLOSE_SESSION:
        return CloseSession(request_id, session)
    if op is Op.LOGOUT:
        return Logout(request_id, session)
    if op is Op.GENERATE_KEY:
        return GenerateKey(request_id, session, v.read_mechanism(r), v.read_template(r))
    if op is Op.GENERATE_KEY_PAIR:
        mech = v.read_mechanism(r)
        return GenerateKeyPair(request_id, session, mech, v.read_template(r), v.read_template(r))
    if op is Op.FIND_OBJECTS:
        return FindObjects(request_id, session, v.read_template(r))
    if op is Op.GET_ATTRIBUTES:
        return GetAttributes(request_id, session, r.u64("handle"), v.read_types(r))
    if op is Op.DESTROY_OBJECT:
        return DestroyObject(request_id, session, r.u64("handle"))
    if op is Op.GENERATE_RANDOM:
        return GenerateRandom(request_id, session, r.u32("length", high=v.MAX_RANDOM))
    if op is Op.CLONE_OPEN:
        role = CloneRole(r.u8("clone role", low=min(CloneRole), high=max(CloneRole)))
        peer = v.read_serial(r)
        count = r.u32("handle count", high=MAX_CLONE_HANDLES)
        handles = tuple(r.u64("handle") for _ in range(count))
        return CloneOpen(request_id, session, role, peer, handles)
    if op is Op.CLONE_FRAME:
        return CloneFrame(request_id, session, _read_data(r, "cloning frames", v.MAX_OUTPUT))
    if op is Op.ARCHIVE:
        return _read_archive(r, request_id, session)
    mech = v.read_mechanism(r)
    key = r.u64("key")
    data = _read_data(r, "data", v.MAX_DATA)
    if op is Op.VERIFY:
        return Verify(
            request_id, session, mech, key, data, _read_data(r, "signature", v.MAX_OUTPUT)
        )
    if op is Op.SIGN:
        return Sign(request_id, session, mech, key, data)
    if op is Op.ENCRYPT:
        return Encrypt(request_id, session, mech, key, data)
    return Decrypt(request_id, session, mech, key, data)


def _read_archive(r: Reader, request_id: int, session: int) -> Archive:
    action = ArchiveAction(r.u8("archive action", low=min(ArchiveAction), high=max(ArchiveAction)))
    mode = ArchiveMode(r.u8("archive mode", low=min(ArchiveMode), high=max(ArchiveMode)))
    peer = v.read_serial(r)
    name = v.read_text(r, "backup partition name", MAX_ARCHIVE_NAME)
    count = r.u16("label count", high=MAX_ARCHIVE_LABELS)
    labels = tuple(v.read_text(r, "label", MAX_ARCHIVE_LABEL) for _ in range(count))
    return Archive(request_id, session, action, mode, peer, name, labels)


def _read_result(r: Reader, request_id: int, op: Op, version: int) -> Result:
    shape = RESULT_OF[op]
    if shape is Done:
        return Done(request_id, op)
    if shape is Handle:
        return Handle(request_id, op, r.u64("handle"))
    if shape is KeyPair:
        return KeyPair(request_id, r.u64("public key"), r.u64("private key"))
    if shape is Handles:
        count = r.u32("handle count", high=v.MAX_HANDLES)
        return Handles(request_id, tuple(r.u64("handle") for _ in range(count)))
    if shape is Attributes:
        return Attributes(request_id, v.read_results(r))
    if shape is Output:
        return Output(request_id, op, _read_data(r, "output", v.MAX_OUTPUT))
    if shape is Partitions:
        return Partitions(request_id, v.read_partitions(r, version))
    if shape is TokenInfoResult:
        return TokenInfoResult(request_id, v.read_token_info(r))
    return Mechanisms(request_id, v.read_mechanism_infos(r))


def _read_op(r: Reader) -> Op:
    return Op(r.u8("op", low=min(Op), high=max(Op)))


def decode(type_: int, payload: bytearray, version: int = NTLS_VERSION_MIN) -> Message:
    """The message in one frame's payload, as the connection's negotiated *version* has
    it; any flaw is a `RemoteProtocolError`."""
    if type_ == FrameType.REQUEST and len(payload) > 4 and payload[4] == Op.LOGIN:
        return _read_login(payload)
    parser = _PARSERS.get(type_)
    if parser is None:
        raise UnknownFrameType(f"frame type 0x{type_:02x} is not part of the client protocol")
    r = Reader(bytes(payload), what=FrameType(type_).name.lower())
    message = _result(r, version) if type_ == FrameType.RESULT else parser(r)
    r.finish()
    return message


def _hello(r: Reader) -> Hello:
    low, high = r.u16("version min"), r.u16("version max")
    return Hello(low, high, v.read_text(r, "software", MAX_SOFTWARE))


def _welcome(r: Reader) -> Welcome:
    version = r.u16("version")
    limit = r.u16("max in flight", low=1, high=MAX_IN_FLIGHT)
    return Welcome(version, limit, v.read_serial(r))


def _refused(r: Reader) -> Refused:
    code = NtlsRefuseCode(r.u8("refuse code", low=min(NtlsRefuseCode), high=max(NtlsRefuseCode)))
    return Refused(code, v.read_text(r, "message", MAX_TEXT))


def _close(r: Reader) -> Close:
    code = NtlsCloseCode(r.u8("close code", high=max(NtlsCloseCode)))
    return Close(code, v.read_text(r, "message", MAX_TEXT))


def _request(r: Reader) -> Request:
    request_id = r.u32("request id")
    return _read_request(r, request_id, _read_op(r))


def _result(r: Reader, version: int = NTLS_VERSION_MIN) -> Result:
    request_id = r.u32("request id")
    return _read_result(r, request_id, _read_op(r), version)


def _failure(r: Reader) -> Failure:
    request_id, rv = r.u32("request id"), r.u32("rv", low=1)
    return Failure(request_id, rv, v.read_text(r, "message", MAX_TEXT))


_PARSERS: dict[int, Callable[[Reader], Message]] = {
    FrameType.HELLO: _hello, FrameType.WELCOME: _welcome, FrameType.REFUSED: _refused,
    FrameType.CLOSE: _close, FrameType.REQUEST: _request, FrameType.RESULT: _result,
    FrameType.FAILURE: _failure,
}  # fmt: skip


class FrameBuffer:
    """Sans-IO frame reassembly: `feed` bytes, then `next_frame` until it gives None."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pending: tuple[int, int] | None = None

    def feed(self, data: bytes | bytearray) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def next_frame(self) -> tuple[int, bytearray] | None:
        """``(type, payload)`` of the next whole frame, or None until more bytes arrive."""
        if self._pending is None:
            if len(self._buffer) < HEADER.size:
                return None
            magic, version, type_, length = HEADER.unpack_from(self._buffer)
            if magic != MAGIC:
                raise BadMagic("the peer does not speak the client protocol (bad magic)")
            if version != WIRE_VERSION:
                raise UnsupportedVersion(f"frame version {version} is not {WIRE_VERSION}")
            if type_ not in _PARSERS:
                raise UnknownFrameType(f"frame type 0x{type_:02x} is not a client-protocol type")
            if length > MAX_FRAME:
                raise FrameTooLarge(f"a frame of {length} bytes is over {MAX_FRAME}")
            self._pending = (type_, length)
        type_, length = self._pending
        end = HEADER.size + length
        if len(self._buffer) < end:
            return None
        payload = bytearray(self._buffer[HEADER.size : end])
        self._buffer[:end] = bytes(end)  # wipe before letting go (a login's challenge)
        del self._buffer[:end]
        self._pending = None
        return type_, payload

    def check_eof(self) -> None:
        if self._buffer:
            count = len(self._buffer)
            self.wipe()
            raise TruncatedFrame(f"connection closed with {count} bytes of an unfinished frame")

    def wipe(self) -> None:
        self._buffer[:] = bytes(len(self._buffer))
        self._buffer.clear()
        self._pending = None
