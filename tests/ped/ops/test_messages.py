"""Operation messages: exact layouts, validation, round trips and garbage-in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys.colors import Color
from ped.errors import FieldOutOfRange, LocalProtocolError, RemoteProtocolError, UnknownFrameType
from ped.ops.errors import ErrorCode
from ped.ops.messages import (
    MESSAGE_CLASSES,
    Cancel,
    CloseReason,
    Goodbye,
    ImprintRequest,
    ImprintResult,
    Notice,
    NoticeKind,
    OpError,
    ReadResult,
    ReadSecret,
    ShowDone,
    ShowMessage,
    decode_message,
    encode_message,
)
from ped.wire.types import OpType
from tests.frames import frame_bytes

SETTINGS = settings(max_examples=150, deadline=None)
SECRET = bytes(range(0x40, 0x60))
KEYSET = bytes(range(16))

op_ids = st.integers(1, 0xFFFFFFFF)
colors = st.sampled_from(list(Color))
labels = st.text(max_size=40)
secrets = st.binary(min_size=32, max_size=32)
keysets = st.binary(min_size=16, max_size=16)
timeouts = st.integers(1, 86_400_000)



@st.composite
def imprint_results(draw: st.DrawFn) -> ImprintResult:
    n = draw(st.integers(1, 16))
    reused, pin = draw(st.booleans()), draw(st.booleans())
    secret = draw(secrets) if reused or pin else draw(st.none() | secrets)
    copies = draw(st.integers(0 if reused else 1, 255))
    return ImprintResult(
        draw(op_ids),
        draw(colors),
        draw(keysets),
        draw(st.integers(1, n)),
        n,
        pin,
        copies,
        reused,
        secret,
    )


@st.composite
def read_results(draw: st.DrawFn) -> ReadResult:
    n = draw(st.integers(1, 16))
    return ReadResult(
        draw(op_ids), draw(colors), draw(keysets), draw(st.integers(1, n)), n, draw(secrets)
    )


@st.composite
def imprint_requests(draw: st.DrawFn) -> ImprintRequest:
    secret = draw(st.none() | secrets)
    reuse = True if secret is None else draw(st.booleans())
    return ImprintRequest(draw(op_ids), draw(colors), secret, reuse, draw(labels), draw(timeouts))


messages = st.one_of(
    st.builds(ReadSecret, op_ids, colors, st.none() | keysets, labels, timeouts),
    imprint_requests(),
    st.builds(ShowMessage, op_ids, st.text(max_size=100)),
    st.builds(Cancel, op_ids),
    read_results(),
    imprint_results(),
    st.builds(ShowDone, op_ids),
    st.builds(
        Notice,
        op_ids,
        st.sampled_from(list(NoticeKind)),
        st.integers(0, 255),
        st.integers(0, 255),
        labels,
    ),
    st.builds(OpError, op_ids, st.sampled_from(list(ErrorCode)), labels),
    st.builds(Goodbye, st.sampled_from(list(CloseReason)), labels),
)

EXAMPLES = [
    ReadSecret(1, Color.BLUE, None, "HSM SO", 200_000),
    ReadSecret(2, Color.BLACK, KEYSET, "", 1),
    ImprintRequest(3, Color.RED, SECRET, False, "domain"),
    ImprintRequest(4, Color.ORANGE, None, True),
    ShowMessage(5, "Hello, PED"),
    Cancel(6),
    ReadResult(7, Color.GRAY, KEYSET, 2, 3, SECRET),
    ImprintResult(8, Color.WHITE, KEYSET, 1, 1, False, 2),
    ImprintResult(9, Color.PURPLE, KEYSET, 3, 5, True, 0, True, SECRET),
    ImprintResult(9, Color.PURPLE, KEYSET, 3, 5, True, 5, False, SECRET),
    ShowDone(10),
    Notice(11, NoticeKind.INSERT_KEY, 1, 3, "Insert key 1 of 3"),
    OpError(12, ErrorCode.WRONG_COLOR, "a red key was inserted"),
    Goodbye(CloseReason.SHUTDOWN, "bye"),
]


def test_every_type_has_a_class_and_an_example() -> None:
    assert set(MESSAGE_CLASSES) == {int(t) for t in OpType}
    assert {type(m).TYPE for m in EXAMPLES} == set(OpType)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_examples(message: object) -> None:
    assert decode_message(encode_message(message)) == message  # type: ignore[arg-type]


def test_exact_layout_of_read_secret_and_result() -> None:
    data = ReadSecret(1, Color.BLUE, KEYSET, "SO", 200_000).encode()
    assert data == (
        b"RP\x01\x50\x00\x00\x00\x1e"
        + b"\x00\x00\x00\x01\x01\x00\x03\x0d\x40\x01"
        + KEYSET
        + b"\x00\x02SO"
    )
    data = ReadResult(1, Color.BLUE, KEYSET, 2, 3, SECRET).encode()
    assert data == b"RP\x01\x51\x00\x00\x00\x37\x00\x00\x00\x01\x01" + KEYSET + b"\x02\x03" + SECRET


@pytest.mark.parametrize(
    "build",
    [
        lambda: ReadSecret(0, Color.BLUE),
        lambda: ReadSecret(1, 9),
        lambda: ReadSecret(1, Color.BLUE, bytes(15)),
        lambda: ReadSecret(1, Color.BLUE, label="x" * 129),
        lambda: ReadSecret(1, Color.BLUE, key_timeout_ms=0),
        lambda: ImprintRequest(1, Color.BLUE),
        lambda: ImprintRequest(1, Color.BLUE, bytes(31)),
        lambda: ReadResult(1, Color.BLUE, KEYSET, 3, 2, SECRET),
        lambda: ReadResult(1, Color.BLUE, KEYSET, 1, 17, SECRET),
        lambda: ImprintResult(1, Color.BLUE, KEYSET, 1, 1, False, 0),
        lambda: ImprintResult(1, Color.BLUE, KEYSET, 1, 1, True, 1),  # PIN, no login secret
        lambda: ImprintResult(1, Color.BLUE, KEYSET, 1, 1, False, 0, True),  # reused, none
        lambda: ShowMessage(1, "x" * 513),
        lambda: OpError(1, 99),
    ],
)
def test_constructors_refuse_out_of_range(build: object) -> None:
    with pytest.raises((LocalProtocolError, ValueError)):
        build()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (frame_bytes(OpType.READ_SECRET, b"\x00\x00\x00\x00\x01"), FieldOutOfRange),  # op id 0
        (frame_bytes(OpType.CANCEL, b"\x00\x00\x00\x01\x00"), RemoteProtocolError),  # trailing
        (frame_bytes(0x23, b""), UnknownFrameType),  # an e2e frame is not an operation
        (frame_bytes(OpType.OP_ERROR, b"\x00\x00\x00\x01\x00\x63\x00\x00"), FieldOutOfRange),
        (
            frame_bytes(
                OpType.READ_RESULT, b"\x00\x00\x00\x01\x01" + KEYSET + b"\x03\x02" + SECRET
            ),
            FieldOutOfRange,  # M > N
        ),
        (
            frame_bytes(OpType.IMPRINT, b"\x00\x00\x00\x01\x01\x00\x00\x00\x01\x00\x00\x00"),
            FieldOutOfRange,
        ),
    ],
)
def test_decode_refuses(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_message(data)


def test_wipe_and_repr_hide_secrets() -> None:
    result = ReadResult(7, Color.GRAY, KEYSET, 2, 3, SECRET)
    request = ImprintRequest(3, Color.RED, SECRET)
    reused = ImprintResult(9, Color.PURPLE, KEYSET, 3, 5, True, 0, True, SECRET)
    for message in (result, request, reused):
        assert SECRET.hex() not in repr(message) and repr(SECRET) not in repr(message)
        assert "secret=" not in repr(message)
        message.wipe()
    assert result.secret == request.new_secret == reused.secret == bytearray(32)


@SETTINGS
@given(messages)
def test_round_trip_property(message: object) -> None:
    data = encode_message(message)  # type: ignore[arg-type]
    assert decode_message(data) == message


@SETTINGS
@given(st.binary(max_size=120))
def test_random_bytes_raise_only_remote_errors(data: bytes) -> None:
    try:
        decode_message(data)
    except RemoteProtocolError:
        pass


@SETTINGS
@given(st.sampled_from(list(OpType)), st.binary(max_size=120))
def test_random_payloads_raise_only_remote_errors(type_: OpType, payload: bytes) -> None:
    try:
        decode_message(frame_bytes(type_, payload))
    except RemoteProtocolError:
        pass


@SETTINGS
@given(messages, st.data())
def test_mutated_messages_raise_only_remote_errors(message: object, data: st.DataObject) -> None:
    raw = bytearray(encode_message(message))  # type: ignore[arg-type]
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut]), bytes(raw) + b"\x00"):
        try:
            decode_message(candidate)
        except RemoteProtocolError:
            pass


def test_text_fields_never_carry_control_characters() -> None:
    assert ReadSecret(1, Color.BLUE, label="\x1b[2Jevil").label == "?[2Jevil"
    assert ShowMessage(1, "line 1\nline 2\x07").text == "line 1\nline 2?"
    assert OpError(1, ErrorCode.DEVICE_ERROR, "x" * 300 + "\r").detail == "x" * 256
    assert Notice(1, NoticeKind.INFO, text="é" * 200).text == "é" * 128
    # On the wire an escape is possible; decoding cleans it.
    raw = frame_bytes(OpType.SHOW_MESSAGE, b"\x00\x00\x00\x01\x00\x04\x1b[2J")
    assert decode_message(raw) == ShowMessage(1, "?[2J")
