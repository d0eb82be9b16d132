"""Suite 2's padding: every operation message one size on the wire, the padding checked.

PROTOCOL.md 3.6: the plaintext of a SEALED frame is ``u16 length || message || zeros`` up
to a multiple of 544 bytes; every operation message fits in one block, so every SEALED
frame of an operation is 568 bytes.  The layout is checked here against raw Noise cipher
states (what any implementation holding the keys would decrypt), independently of
``ped.channel.padding``.
"""

from __future__ import annotations

import pytest

from keys.colors import Color
from ped.channel import (
    PAD_BLOCK,
    SUITE_NNPSK0_V1,
    ChannelClosed,
    ChannelInitiator,
    ChannelResponder,
    DecryptFailed,
    SecureChannel,
)
from ped.channel.noise import CipherState
from ped.channel.secure import MAX_SEALED_PADDED
from ped.errors import FieldOutOfRange, LocalProtocolError
from ped.ops.errors import ErrorCode
from ped.ops.messages import (
    LABEL_MAX,
    TEXT_MAX,
    Cancel,
    CloseReason,
    Goodbye,
    ImprintRequest,
    ImprintResult,
    Notice,
    NoticeKind,
    OpError,
    OpMessage,
    ReadResult,
    ReadSecret,
    ShowDone,
    ShowMessage,
)
from ped.wire.framing import Frame, encode_frame
from ped.wire.types import E2EType

K_OUT = bytes([0x11]) * 32
K_IN = bytes([0x22]) * 32
KEYSET = bytes(range(16))
SECRET = bytes(range(32))
#: The whole SEALED frame of any operation message: header, one block, tag.
OPERATION_FRAME_SIZE = 8 + 544 + 16


def channel(*, padded: bool = True) -> SecureChannel:
    """One end: sends with K_OUT, receives with K_IN."""
    return SecureChannel(
        CipherState(K_OUT), CipherState(K_IN), bytes(32), role="initiator", padded=padded
    )


def peer_sends(body: bytes) -> Frame:
    """What a peer holding the keys sends when it encrypts *body* as it likes."""
    return Frame(E2EType.SEALED, CipherState(K_IN).encrypt_with_ad(b"", body))


def layout(message: bytes, blocks: int = 1) -> bytes:
    return len(message).to_bytes(2, "big") + message + bytes(blocks * 544 - 2 - len(message))


def every_operation_message() -> list[OpMessage]:
    """Each kind at its smallest and its largest, of every colour, short and long texts."""
    long_label, long_text, long_detail = "L" * LABEL_MAX, "T" * TEXT_MAX, "d" * 256
    messages: list[OpMessage] = []
    for color in Color:
        for label in ("", "SO", long_label):
            messages.append(ReadSecret(1, color, None, label, 1))
            messages.append(ReadSecret(0xFFFFFFFF, color, KEYSET, label, 86_400_000))
            messages.append(ImprintRequest(2, color, SECRET, False, label, 200_000))
            messages.append(ImprintRequest(2, color, None, True, label, 200_000))
            messages.append(ImprintRequest(2, color, SECRET, True, label, 200_000))
        messages.append(ReadResult(1, color, KEYSET, 1, 1, SECRET))
        messages.append(ReadResult(1, color, KEYSET, 16, 16, SECRET))
        messages.append(ImprintResult(2, color, KEYSET, 1, 1, False, 1))
        messages.append(ImprintResult(2, color, KEYSET, 2, 3, True, 16, False, SECRET))
        messages.append(ImprintResult(2, color, KEYSET, 2, 3, True, 0, True, SECRET))
    for text in ("", "Hello", long_text, "é" * (TEXT_MAX // 2)):
        messages.append(ShowMessage(3, text))
    messages += [ShowDone(3), Cancel(4)]
    for detail in ("", "cancelled", long_detail):
        messages.append(Notice(1, NoticeKind.INSERT_KEY, 1, 16, detail))
        messages.append(OpError(4, ErrorCode.CANCELLED, detail))
        messages.append(Goodbye(CloseReason.NORMAL, detail))
    return messages


def test_every_operation_message_of_every_kind_is_one_size_on_the_wire() -> None:
    sender = channel()
    sizes = {len(encode_frame(sender.seal(m.encode()))) for m in every_operation_message()}
    assert sizes == {OPERATION_FRAME_SIZE}
    assert max(len(m.encode()) for m in every_operation_message()) + 2 <= PAD_BLOCK


def test_the_padded_plaintext_is_length_message_zeros() -> None:
    sender = channel()
    for message in (b"", b"abc", bytes(range(256)) * 2, bytes(542)):
        sealed = sender.seal(message)
        raw = CipherState(K_OUT)
        raw.n = sender.messages_sent - 1
        assert raw.decrypt_with_ad(b"", sealed.payload) == layout(message)
    sealed = sender.seal(bytes(543))  # one byte more than a block holds: two blocks
    assert len(sealed.payload) == 2 * 544 + 16


def test_a_peer_may_pad_more_than_it_must() -> None:
    receiver = channel()
    assert receiver.open(peer_sends(layout(b"hello", blocks=3))) == b"hello"


@pytest.mark.parametrize(
    "body",
    [
        (543).to_bytes(2, "big") + bytes(542),  # says more than the block holds
        (0xFFFF).to_bytes(2, "big") + bytes(542),
        layout(b"abc")[:-1] + b"\x01",  # a non-zero byte at the end
        layout(b"abc")[:5] + b"\x80" + layout(b"abc")[6:],  # just after the message
        layout(b"")[:2] + b"\x01" + bytes(541),  # an empty message, padding not zero
    ],
    ids=["length-over-block", "length-ffff", "last-byte", "after-message", "empty-message"],
)
def test_a_bad_length_or_nonzero_padding_fails_and_kills_the_channel(body: bytes) -> None:
    receiver = channel()
    with pytest.raises(FieldOutOfRange):
        receiver.open(peer_sends(body))
    assert receiver.closed
    with pytest.raises(ChannelClosed):
        receiver.open(peer_sends(layout(b"abc")))


@pytest.mark.parametrize("size", [0, 15, 16, 17, 16 + 543, 16 + 545, MAX_SEALED_PADDED + 544])
def test_sizes_no_padded_message_can_have_are_refused_before_decryption(size: int) -> None:
    receiver = channel()
    with pytest.raises(DecryptFailed, match="allowed"):
        receiver.open(Frame(E2EType.SEALED, bytes(size)))
    assert receiver.closed


def test_the_largest_padded_message_passes() -> None:
    receiver = channel()
    body = layout(b"x", blocks=(MAX_SEALED_PADDED - 16) // 544)
    assert receiver.open(peer_sends(body)) == b"x"


def test_suite_1_is_unpadded_end_to_end() -> None:
    initiator = ChannelInitiator(rpv=bytes(32), hsm_serial="150001", suite=SUITE_NNPSK0_V1)
    responder = ChannelResponder()
    init = responder.receive_init(initiator.start())
    assert init.suite == 1 and not init.padded
    response, ped = responder.accept(bytes(32))
    hsm = initiator.receive(response)
    assert not hsm.padded and not ped.padded
    sealed = hsm.seal(b"old")
    assert len(sealed.payload) == 3 + 16
    assert ped.open(sealed) == b"old"


def test_suite_2_is_the_default_and_an_unknown_suite_is_refused_locally() -> None:
    initiator = ChannelInitiator(rpv=bytes(32), hsm_serial="150001")
    assert initiator.start().payload[0] == 2
    with pytest.raises(LocalProtocolError):
        ChannelInitiator(rpv=bytes(32), hsm_serial="150001", suite=3)


def test_the_padded_plaintext_is_wiped_after_sealing(monkeypatch: pytest.MonkeyPatch) -> None:
    from ped.channel import secure

    made: list[bytearray] = []
    real_pad = secure.pad

    def spy(message: bytes | bytearray) -> bytearray:
        made.append(real_pad(message))
        return made[-1]

    monkeypatch.setattr(secure, "pad", spy)
    channel().seal(SECRET)
    assert made and made[0] == bytearray(len(made[0]))
