"""The client protocol's codec: hypothesis round trips, malformed input gives typed errors."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ped.errors import (
    BadMagic,
    FieldOutOfRange,
    FrameTooLarge,
    LocalProtocolError,
    PedError,
    RemoteProtocolError,
    TrailingBytes,
    TruncatedFrame,
    UnknownFrameType,
)
from ped.ntls import messages as m
from ped.ntls import values as v
from ped.ntls.frames import MAX_FRAME, FrameBuffer, decode, encode
from ped.pkcs11.constants import CKA, CKM, CKU
from ped.pkcs11.token import (
    Attribute,
    AttributeResult,
    AttrKind,
    GcmParams,
    Mechanism,
    PartitionInfo,
    attr_kind,
)

from .examples import EXAMPLES

u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)
ATTR_TYPES = [int(a) for a in CKA] + [0x80000001]


@st.composite
def attributes(draw: st.DrawFn) -> Attribute:
    t = draw(st.sampled_from(ATTR_TYPES))
    kind = attr_kind(t)
    if kind is AttrKind.BOOL:
        return Attribute(t, draw(st.booleans()))
    if kind is AttrKind.ULONG:
        return Attribute(t, draw(u64))
    return Attribute(t, draw(st.binary(max_size=64)))


templates = st.lists(attributes(), max_size=5).map(tuple)
mechanisms = st.one_of(
    st.builds(Mechanism, u32),
    st.builds(Mechanism, u32, st.binary(max_size=32)),
    st.builds(Mechanism, u32, st.builds(GcmParams, st.binary(max_size=16),
                                        st.binary(max_size=16), st.integers(0, 128))),
)  # fmt: skip
serials = st.text("0123456789", min_size=1, max_size=16)
data = st.binary(max_size=200)

requests = st.one_of(
    st.builds(m.ListPartitions, u32),
    st.builds(m.GetTokenInfo, u32, serials),
    st.builds(m.GetMechanisms, u32, serials),
    st.builds(m.OpenSession, u32, serials, st.booleans()),
    st.builds(m.CloseSession, u32, u64),
    st.builds(m.Logout, u32, u64),
    st.builds(m.GenerateKey, u32, u64, mechanisms, templates),
    st.builds(m.GenerateKeyPair, u32, u64, mechanisms, templates, templates),
    st.builds(m.FindObjects, u32, u64, templates),
    st.builds(m.GetAttributes, u32, u64, u64, st.lists(u32, max_size=5).map(tuple)),
    st.builds(m.DestroyObject, u32, u64, u64),
    st.builds(m.Sign, u32, u64, mechanisms, u64, data),
    st.builds(m.Encrypt, u32, u64, mechanisms, u64, data),
    st.builds(m.Decrypt, u32, u64, mechanisms, u64, data),
    st.builds(m.Verify, u32, u64, mechanisms, u64, data, data),
    st.builds(m.GenerateRandom, u32, u64, st.integers(0, v.MAX_RANDOM)),
)


def _decode_one(wire: bytes | bytearray) -> m.Message:
    buffer = FrameBuffer()
    buffer.feed(wire)
    frame = buffer.next_frame()
    assert frame is not None and buffer.buffered == 0
    return decode(*frame)


@given(requests)
def test_requests_round_trip(request: m.Request) -> None:
    assert _decode_one(encode(request)) == request


@given(u32, u64, st.sampled_from([CKU.USER, CKU.SO, CKU.CRYPTO_USER]), st.binary(max_size=256))
def test_login_round_trips_and_keeps_the_challenge_out_of_reprs(
    rid: int, session: int, user: int, pin: bytes
) -> None:
    login = m.Login(rid, session, user, bytearray(pin))
    got = _decode_one(encode(login))
    assert isinstance(got, m.Login)
    assert (got.request_id, got.session, got.user_type, bytes(got.pin)) == (rid, session, user, pin)
    assert isinstance(got.pin, bytearray)
    assert repr(got) == f"Login(request_id={rid}, session={session}, user_type={int(user)})"


@given(u32, st.lists(attributes(), max_size=5))
def test_attribute_results_round_trip(rid: int, attrs_: list[Attribute]) -> None:
    sensitive = AttributeResult(CKA.VALUE, None, 0x11)
    results = (*(AttributeResult(a.type, a.value) for a in attrs_), sensitive)
    msg = m.Attributes(rid, results)
    assert _decode_one(encode(msg)) == msg


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_payloads_give_only_typed_errors(payload: bytes) -> None:
    for ftype in m.FrameType:
        for version in (1, 2):
            try:
                decode(ftype, bytearray(payload), version)
            except RemoteProtocolError:
                pass


@settings(max_examples=200)
@given(st.sampled_from(sorted(EXAMPLES)), st.data())
def test_mutated_vectors_give_only_typed_errors(name: str, draw: st.DataObject) -> None:
    wire = bytearray(encode(EXAMPLES[name]))
    index = draw.draw(st.integers(0, len(wire) - 1))
    wire[index] ^= draw.draw(st.integers(1, 255))
    cut = draw.draw(st.integers(0, len(wire)))
    buffer = FrameBuffer()
    try:
        buffer.feed(wire[:cut])
        frame = buffer.next_frame()
        if frame is not None:
            decode(*frame)
        buffer.check_eof()
    except PedError:
        pass


def test_malformed_frames_are_named() -> None:
    good = encode(EXAMPLES["hello"])
    cases: list[tuple[bytes, type[Exception]]] = [
        (b"XX" + good[2:], BadMagic),
        (good[:3] + b"\x40" + good[4:], UnknownFrameType),
        (good[:4] + (MAX_FRAME + 1).to_bytes(4, "big"), FrameTooLarge),
    ]
    for wire, error in cases:
        buffer = FrameBuffer()
        buffer.feed(wire)
        with pytest.raises(error):
            buffer.next_frame()
    buffer = FrameBuffer()
    buffer.feed(good[:-1])
    assert buffer.next_frame() is None
    with pytest.raises(TruncatedFrame):
        buffer.check_eof()


def test_malformed_fields_are_named_never_shown() -> None:
    with pytest.raises(TrailingBytes):
        decode(m.FrameType.REQUEST, bytearray(encode(EXAMPLES["list_partitions"])[8:] + b"\0"))
    sign = bytearray(encode(EXAMPLES["sign"])[8:])
    sign[-8:-4] = (v.MAX_DATA + 1).to_bytes(4, "big")  # the data length
    with pytest.raises(FieldOutOfRange, match="data length"):
        decode(m.FrameType.REQUEST, sign)
    boolean = bytearray(encode(EXAMPLES["open_session"])[8:])
    boolean[-1] = 2
    with pytest.raises(FieldOutOfRange, match="read-write"):
        decode(m.FrameType.REQUEST, boolean)
    login = bytearray(encode(EXAMPLES["login"])[8:])
    with pytest.raises(TruncatedFrame):
        decode(m.FrameType.REQUEST, login[:-1])
    with pytest.raises(TrailingBytes) as extra:
        decode(m.FrameType.REQUEST, login + b"x")
    assert "chal" not in str(extra.value)
    with pytest.raises(FieldOutOfRange):
        decode(m.FrameType.FAILURE, bytearray(b"\0\0\0\1\0\0\0\0\0\0"))  # rv 0 is no failure
    label = bytearray(encode(m.Partitions(1, ()))[8:])
    with pytest.raises(FieldOutOfRange, match="unprintable"):
        decode(m.FrameType.RESULT, label[:-2] + b"\x00\x01" + b"\x00\x02\x00\x1b[\x00")


def test_partition_flags_follow_the_version() -> None:
    auto = m.Partitions(7, (PartitionInfo("1500010001", "app", True, True, auto_activation=True),
                            PartitionInfo("1500010002", "b", True, False)))  # fmt: skip
    v2 = encode(auto, 2)
    assert decode(m.FrameType.RESULT, bytearray(v2[8:]), 2) == auto
    v1 = encode(auto, 1)  # a version-1 peer: bit 2 is never written
    assert bytes(v1) == bytes(v2).replace(b"app\x07", b"app\x03")
    got = decode(m.FrameType.RESULT, bytearray(v1[8:]), 1)
    assert isinstance(got, m.Partitions)
    assert [p.auto_activation for p in got.partitions] == [False, False]
    assert [p.activated for p in got.partitions] == [True, False]
    with pytest.raises(FieldOutOfRange, match="partition flags"):
        decode(m.FrameType.RESULT, bytearray(v2[8:]), 1)  # a version-1 reader refuses bit 2
    eight = bytearray(v2[8:])
    eight[eight.index(b"app\x07") + 3] = 8  # a bit no version has
    with pytest.raises(FieldOutOfRange, match="partition flags"):
        decode(m.FrameType.RESULT, eight, 2)


def test_oversized_values_are_local_errors() -> None:
    with pytest.raises(LocalProtocolError):
        encode(m.FindObjects(1, 1, (Attribute(CKA.LABEL, b"x" * (v.MAX_ATTR_VALUE + 1)),)))
    with pytest.raises(LocalProtocolError):
        encode(m.Sign(1, 1, Mechanism(CKM.ECDSA), 1, b"x" * (v.MAX_DATA + 1)))
    with pytest.raises(LocalProtocolError):
        encode(m.Login(1, 1, CKU.USER, bytearray(v.MAX_PIN + 1)))
    with pytest.raises(LocalProtocolError, match="takes a bool"):
        encode(m.FindObjects(1, 1, (Attribute(CKA.TOKEN, 1),)))


def test_reprs_hide_data_and_outputs() -> None:
    sign = m.Sign(1, 1, Mechanism(CKM.ECDSA), 1, b"top secret data")
    assert "top secret" not in repr(sign)
    assert "top secret" not in repr(m.Output(1, m.Op.DECRYPT, b"top secret data"))
    assert "top secret" not in repr(attrs.evolve(sign))
