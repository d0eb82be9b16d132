"""The p11-kit RPC codec: round trips, the native-length rule, mechanisms per version,
framing limits, and malformed input as typed errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hsmclient.p11kit.attributes import (
    WireKind,
    read_mechanism,
    read_template,
    wire_kind,
    write_attribute_answers,
    write_mechanism,
    write_template,
)
from hsmclient.p11kit.buffer import Reader, Writer
from hsmclient.p11kit.errors import MalformedMessage, MessageTooLarge, TruncatedMessage
from hsmclient.p11kit.framing import MAX_VERSION, Frame, RpcConnection, request_frame
from ped.pkcs11.constants import CKA, CKM, CKR
from ped.pkcs11.token import Attribute, AttributeResult, GcmParams, Mechanism, Pkcs11Error

_BOOLS = [CKA.TOKEN, CKA.PRIVATE, CKA.SENSITIVE, CKA.SIGN, CKA.VERIFY, CKA.EXTRACTABLE]
_ULONGS = [CKA.CLASS, CKA.KEY_TYPE, CKA.VALUE_LEN, CKA.KEY_GEN_MECHANISM]
_BYTES = [CKA.LABEL, CKA.ID, CKA.EC_PARAMS, CKA.EC_POINT, CKA.VALUE]

attributes = st.one_of(
    st.builds(Attribute, st.sampled_from(_BOOLS), st.booleans()),
    st.builds(Attribute, st.sampled_from(_ULONGS), st.integers(0, 2**64 - 1)),
    st.builds(Attribute, st.sampled_from(_BYTES), st.binary(max_size=300)),
    st.builds(Attribute, st.just(CKA.DESTROYABLE), st.booleans()),  # a byte array on the wire
)


@given(st.lists(attributes, max_size=20))
def test_templates_round_trip(template: list[Attribute]) -> None:
    writer = Writer()
    write_template(writer, template)
    reader = Reader(writer.getvalue())
    assert read_template(reader) == template
    assert reader.remaining == 0


@given(st.binary(max_size=500) | st.none(), st.integers(0, 2**32 - 2))
def test_flagged_arrays_round_trip(data: bytes | None, length: int) -> None:
    writer = Writer()
    writer.flagged_array(data, length)
    reader = Reader(writer.getvalue())
    assert reader.flagged_array() == data
    assert reader.remaining == 0


mechanisms = st.one_of(
    st.builds(Mechanism, st.sampled_from([CKM.ECDSA, CKM.EC_KEY_PAIR_GEN, CKM.SHA256_HMAC,
                                          CKM.AES_KEY_GEN, CKM.GENERIC_SECRET_KEY_GEN])),
    st.builds(Mechanism, st.just(CKM.AES_GCM),
              st.builds(GcmParams, st.binary(min_size=1, max_size=16), st.binary(max_size=40),
                        st.sampled_from([96, 128]))),
    st.builds(Mechanism, st.just(CKM.EDDSA), st.binary(max_size=40) | st.none()),
)  # fmt: skip


@given(mechanisms, st.integers(1, MAX_VERSION))
def test_mechanisms_round_trip_in_versions_1_and_2(mechanism: Mechanism, version: int) -> None:
    writer = Writer()
    write_mechanism(writer, mechanism, version)
    reader = Reader(writer.getvalue())
    assert read_mechanism(reader, version, cancels=False) == mechanism
    assert reader.remaining == 0


@pytest.mark.parametrize(
    ("version", "encoded"),
    [
        (0, "00001041ffffffff"),  # 0.24: the type, then a NULL parameter array
        (1, "00001041ffffffff"),
        (2, "00001041"),  # 0.25.6+: nothing after a parameterless mechanism
    ],
)
def test_ecdsa_is_encoded_per_version(version: int, encoded: str) -> None:
    writer = Writer()
    write_mechanism(writer, Mechanism(CKM.ECDSA), version)
    assert writer.getvalue().hex() == encoded


@pytest.mark.parametrize(("version", "marker"), [(0, 0xFFFFFFFF), (1, 0), (1, 0xFFFFFFFF),
                                                 (2, 0), (2, 0xFFFFFFFF)])  # fmt: skip
def test_both_no_mechanism_markers_cancel(version: int, marker: int) -> None:
    reader = Reader(marker.to_bytes(4, "big") + (7).to_bytes(8, "big"))
    assert read_mechanism(reader, version, cancels=True) is None
    assert reader.u64() == 7  # the key handle that follows is intact


def test_an_unknown_mechanism_is_mechanism_invalid_not_a_parse_error() -> None:
    reader = Reader((0x1234).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(Pkcs11Error) as caught:
        read_mechanism(reader, 2, cancels=False)
    assert caught.value.rv == CKR.MECHANISM_INVALID


def test_p11kit_wire_kinds_differ_from_the_contract_where_p11kit_says_so() -> None:
    assert wire_kind(CKA.DESTROYABLE) is WireKind.BYTES  # not in p11-kit's boolean table
    assert wire_kind(CKA.CLASS) is WireKind.ULONG
    assert wire_kind(CKA.SIGN) is WireKind.BYTE
    assert wire_kind(0x40000211) is WireKind.NESTED  # CKA_WRAP_TEMPLATE


def _answers(
    asked: list[tuple[int, int | None]], results: list[AttributeResult]
) -> tuple[int, Reader]:
    writer = Writer()
    rv = write_attribute_answers(writer, asked, results)
    return rv, Reader(writer.getvalue())


def test_attribute_answers_carry_the_native_length() -> None:
    rv, reader = _answers(
        [(CKA.CLASS, 8), (CKA.SIGN, 1), (CKA.LABEL, 10)],
        [AttributeResult(CKA.CLASS, 3), AttributeResult(CKA.SIGN, True),
         AttributeResult(CKA.LABEL, b"app-key")],
    )  # fmt: skip
    assert rv == CKR.OK
    assert reader.u32() == 3
    assert (reader.u32(), reader.byte(), reader.u32(), reader.u64()) == (CKA.CLASS, 1, 8, 3)
    assert (reader.u32(), reader.byte(), reader.u32(), reader.byte()) == (CKA.SIGN, 1, 1, 1)
    assert (reader.u32(), reader.byte(), reader.u32()) == (CKA.LABEL, 1, 7)
    assert reader.array() == b"app-key"
    assert reader.u64() == CKR.OK and reader.remaining == 0


def test_attribute_size_queries_too_small_and_sensitive() -> None:
    rv, reader = _answers(
        [(CKA.LABEL, None), (CKA.ID, 2), (CKA.VALUE, 32), (CKA.MODULUS_BITS, 8)],
        [AttributeResult(CKA.LABEL, b"app-key"), AttributeResult(CKA.ID, b"\x01\x02\x03"),
         AttributeResult(CKA.VALUE, None, CKR.ATTRIBUTE_SENSITIVE),
         AttributeResult(CKA.MODULUS_BITS, None, CKR.ATTRIBUTE_TYPE_INVALID)],
    )  # fmt: skip
    assert rv == CKR.ATTRIBUTE_SENSITIVE
    assert reader.u32() == 4
    # a size query: the length and a NULL value
    assert (reader.u32(), reader.byte(), reader.u32(), reader.array()) == (CKA.LABEL, 1, 7, None)
    assert (reader.u32(), reader.byte()) == (CKA.ID, 0)  # too small: unavailable
    assert (reader.u32(), reader.byte()) == (CKA.VALUE, 0)
    assert (reader.u32(), reader.byte()) == (CKA.MODULUS_BITS, 0)
    assert reader.u64() == CKR.ATTRIBUTE_SENSITIVE


def test_counts_that_cannot_fit_are_refused_before_anything_is_built() -> None:
    reader = Reader((500).to_bytes(4, "big") + b"\x00" * 10)
    with pytest.raises(MalformedMessage, match="cannot fit"):
        read_template(reader)
    reader = Reader((2**32 - 2).to_bytes(4, "big"))
    with pytest.raises(MalformedMessage, match="limit"):
        read_template(reader)


def test_a_byte_array_longer_than_its_message_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match="needs 1000 bytes"):
        Reader((1000).to_bytes(4, "big") + b"abc").array()


# -- framing -----------------------------------------------------------------------------


@pytest.mark.parametrize(("offered", "answered"), [(0, 0), (1, 1), (2, 2), (9, 2)])
def test_version_negotiation_answers_the_lower(offered: int, answered: int) -> None:
    connection = RpcConnection()
    connection.receive_data(bytes([offered]))
    event = connection.next_event()
    assert event is not None
    assert connection.accept_version(offered) == bytes([answered])
    assert connection.version == answered


@given(st.lists(st.binary(max_size=200), min_size=1, max_size=5), st.integers(1, 50))
def test_frames_arrive_whole_however_the_bytes_are_split(bodies: list[bytes], step: int) -> None:
    stream = b"\x00" + b"".join(request_frame(i, b, b"client") for i, b in enumerate(bodies))
    connection = RpcConnection()
    events = []
    for start in range(0, len(stream), step):
        connection.receive_data(stream[start : start + step])
        while (event := connection.next_event()) is not None:
            events.append(event)
    assert events[1:] == [Frame(i, bytearray(b)) for i, b in enumerate(bodies)]


def test_an_oversized_message_is_refused_from_its_header() -> None:
    connection = RpcConnection(max_body=1000)
    connection.receive_data(b"\x00" + (1).to_bytes(4, "big") + bytes(4) + (1001).to_bytes(4, "big"))
    connection.next_event()
    with pytest.raises(MessageTooLarge, match="1001 bytes announced; the limit is 1000"):
        connection.next_event()


def test_oversized_options_are_refused() -> None:
    connection = RpcConnection()
    connection.receive_data(
        b"\x00" + (1).to_bytes(4, "big") + (2**31).to_bytes(4, "big") + bytes(4)
    )
    connection.next_event()
    with pytest.raises(MessageTooLarge, match="options"):
        connection.next_event()


def test_a_stream_ending_inside_a_frame_is_truncated_and_between_frames_clean() -> None:
    connection = RpcConnection()
    connection.receive_data(b"\x00" + request_frame(1, b"0123456789")[:15])
    connection.next_event()
    assert connection.next_event() is None
    connection.receive_data(b"")
    with pytest.raises(TruncatedMessage):
        connection.next_event()
    clean = RpcConnection()
    clean.receive_data(b"\x00" + request_frame(1, b"x"))
    clean.receive_data(b"")
    assert clean.next_event() is not None and clean.next_event() is not None
    assert clean.next_event() is None and clean.at_clean_end
