"""Channel (sans-IO): handshake, wrong RPV, binding, seal/open, tamper, replay, limits, wipe."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ped.channel import (
    MAX_PLAINTEXT,
    PAD_BLOCK,
    ChannelClosed,
    ChannelInitiator,
    ChannelResponder,
    DecryptFailed,
    HandshakeFailed,
    HandshakeInit,
    HandshakeRefusal,
    HandshakeRefused,
    MessageTooLarge,
    NonceExhausted,
    PedInfo,
    RefuseReason,
    RpvMismatch,
    SecureChannel,
    UnsupportedSuite,
    derive_psk,
)
from ped.channel.noise import MAX_NONCE
from ped.errors import (
    FieldOutOfRange,
    LocalProtocolError,
    PedError,
    TruncatedFrame,
    UnknownFrameType,
)
from ped.wire.codec import Writer
from ped.wire.framing import Frame
from ped.wire.types import E2EType

RPV = bytes(range(32))
SERIAL = "150001"


def handshake(
    rpv_hsm: bytes = RPV, rpv_ped: bytes = RPV, serial: str = SERIAL, *, fixed: bool = False
) -> tuple[SecureChannel, SecureChannel]:
    e_hsm, e_ped = (bytes([1]) * 32, bytes([2]) * 32) if fixed else (None, None)
    initiator = ChannelInitiator(rpv=rpv_hsm, hsm_serial=serial, ephemeral_private=e_hsm)
    responder = ChannelResponder(ped_info=PedInfo("m", "s", "f"), ephemeral_private=e_ped)
    init = responder.receive_init(initiator.start())
    assert init.hsm_serial == serial
    frame, ped_channel = responder.accept(rpv_ped)
    hsm_channel = initiator.receive(frame)
    assert initiator.peer_info == PedInfo("m", "s", "f")
    return hsm_channel, ped_channel


def test_derive_psk_is_rfc5869_hkdf_with_the_label() -> None:
    prk = hmac.new(b"\x00" * 32, RPV, hashlib.sha256).digest()
    okm = hmac.new(prk, b"remote-ped v1 rpv psk" + b"\x01", hashlib.sha256).digest()
    assert derive_psk(RPV) == bytearray(okm)
    with pytest.raises(LocalProtocolError):
        derive_psk(bytes(31))


def test_handshake_and_both_directions() -> None:
    hsm, ped = handshake()
    assert hsm.handshake_hash == ped.handshake_hash
    for i in range(5):
        assert ped.open(hsm.seal(b"to ped %d" % i)) == b"to ped %d" % i
        assert hsm.open(ped.seal(b"to hsm %d" % i)) == b"to hsm %d" % i
    assert hsm.messages_sent == 5 and hsm.messages_received == 5


def test_wrong_rpv_is_rpv_mismatch_on_both_ends() -> None:
    initiator = ChannelInitiator(rpv=RPV, hsm_serial=SERIAL)
    responder = ChannelResponder()
    responder.receive_init(initiator.start())
    with pytest.raises(RpvMismatch) as excinfo:
        responder.accept(bytes(32))
    refusal = responder.refuse(RefuseReason.RPV_MISMATCH)
    assert refusal.payload == b"\x01\x00\x00"  # reason code only: nothing about any RPV
    with pytest.raises(RpvMismatch) as hsm_excinfo:
        initiator.receive(refusal)
    for exc in (excinfo.value, hsm_excinfo.value):
        assert RPV.hex() not in str(exc) and "\\x" not in str(exc)


def test_prologue_binds_serial_and_timeout() -> None:
    initiator = ChannelInitiator(rpv=RPV, hsm_serial=SERIAL, key_timeout_ms=200_000)
    init = HandshakeInit.from_frame(initiator.start())
    for forged in (
        HandshakeInit("150002", init.key_timeout_ms, init.noise_message),
        HandshakeInit(SERIAL, 600_000, init.noise_message),
    ):
        responder = ChannelResponder()
        responder.receive_init(forged.to_frame())
        with pytest.raises(RpvMismatch):
            responder.accept(RPV)


def test_ped_answer_that_does_not_authenticate_is_rpv_mismatch() -> None:
    initiator = ChannelInitiator(rpv=RPV, hsm_serial=SERIAL)
    responder = ChannelResponder()
    responder.receive_init(initiator.start())
    frame, _ = responder.accept(RPV)
    tampered = bytearray(frame.payload)
    tampered[-1] ^= 1
    with pytest.raises(RpvMismatch):
        initiator.receive(Frame(frame.type, bytes(tampered)))


def test_low_order_ephemeral_is_typed_failure() -> None:
    initiator = ChannelInitiator(rpv=RPV, hsm_serial=SERIAL)
    initiator.start()
    bogus = Frame(E2EType.HANDSHAKE_RESPONSE, Writer().bytes16(bytes(48)).getvalue())
    with pytest.raises(HandshakeFailed):
        initiator.receive(bogus)


def test_unsupported_suite_and_malformed_init() -> None:
    initiator = ChannelInitiator(rpv=RPV, hsm_serial=SERIAL)
    frame = initiator.start()
    with pytest.raises(UnsupportedSuite):
        ChannelResponder().receive_init(Frame(frame.type, b"\x03" + frame.payload[1:]))
    with pytest.raises(TruncatedFrame):
        ChannelResponder().receive_init(Frame(frame.type, frame.payload[:-1]))
    short = frame.payload[:-50] + Writer().bytes16(bytes(47)).getvalue()
    with pytest.raises(FieldOutOfRange):
        ChannelResponder().receive_init(Frame(frame.type, short))
    with pytest.raises(UnknownFrameType):
        ChannelResponder().receive_init(Frame(E2EType.SEALED, frame.payload))


def test_other_refusals_are_handshake_refused() -> None:
    initiator = ChannelInitiator(rpv=RPV, hsm_serial=SERIAL)
    initiator.start()
    refusal = HandshakeRefusal(RefuseReason.CANCELLED, "operator pressed CLR\x07").to_frame()
    with pytest.raises(HandshakeRefused) as excinfo:
        initiator.receive(refusal)
    assert excinfo.value.reason is RefuseReason.CANCELLED
    assert "\x07" not in str(excinfo.value)


def test_single_use_objects() -> None:
    initiator = ChannelInitiator(rpv=RPV, hsm_serial=SERIAL)
    frame = initiator.start()
    with pytest.raises(LocalProtocolError):
        initiator.start()
    responder = ChannelResponder()
    with pytest.raises(LocalProtocolError):
        responder.accept(RPV)
    responder.receive_init(frame)
    with pytest.raises(LocalProtocolError):
        responder.receive_init(frame)
    with pytest.raises(LocalProtocolError):
        ChannelInitiator(rpv=RPV, hsm_serial="has space")


@pytest.mark.parametrize("attack", ["replay", "reorder", "drop", "truncate", "extend", "type"])
def test_transport_attacks_fail_and_kill_the_channel(attack: str) -> None:
    hsm, ped = handshake()
    first, second = hsm.seal(b"one"), hsm.seal(b"two")
    assert ped.open(first) == b"one"
    if attack == "replay":
        bad = first
    elif attack == "reorder":
        hsm.seal(b"three")
        bad = hsm.seal(b"four")
    elif attack == "drop":
        bad = hsm.seal(b"three")
    elif attack == "truncate":
        bad = Frame(second.type, second.payload[:-1])
    elif attack == "extend":
        bad = Frame(second.type, second.payload + b"\x00")
    else:
        bad = Frame(E2EType.HANDSHAKE_INIT, second.payload)
    with pytest.raises(PedError):
        ped.open(bad)
    assert ped.closed
    with pytest.raises(ChannelClosed):
        ped.open(second)  # even the genuine next message: the channel is dead


def test_every_bit_flip_of_a_sealed_message_fails() -> None:
    # Fixed ephemeral keys make every handshake identical, so each copy of the PED end
    # would accept the genuine message; every altered bit must still be refused.
    hsm, _ = handshake(fixed=True)
    sealed = hsm.seal(b"a secret-bearing message")
    _, genuine = handshake(fixed=True)
    assert genuine.open(sealed) == b"a secret-bearing message"
    for position in range(len(sealed.payload)):
        _, fresh = handshake(fixed=True)
        payload = bytearray(sealed.payload)
        payload[position] ^= 0x80
        with pytest.raises(DecryptFailed):
            fresh.open(Frame(sealed.type, bytes(payload)))


def test_size_limits() -> None:
    hsm, ped = handshake()
    assert ped.open(hsm.seal(bytes(MAX_PLAINTEXT))) == bytes(MAX_PLAINTEXT)
    with pytest.raises(MessageTooLarge):
        hsm.seal(bytes(MAX_PLAINTEXT + 1))
    with pytest.raises(DecryptFailed):
        ped.open(Frame(E2EType.SEALED, bytes(MAX_PLAINTEXT + 17)))
    _, ped = handshake()
    with pytest.raises(DecryptFailed):
        ped.open(Frame(E2EType.SEALED, bytes(15)))


def test_nonce_exhaustion_both_directions() -> None:
    hsm, ped = handshake()
    hsm._send.n = MAX_NONCE - 1
    ped._recv.n = MAX_NONCE - 1
    assert ped.open(hsm.seal(b"last")) == b"last"
    with pytest.raises(NonceExhausted):
        hsm.seal(b"one too many")
    with pytest.raises(NonceExhausted):
        ped.open(Frame(E2EType.SEALED, bytes(PAD_BLOCK + 16)))


def test_close_wipes_keys() -> None:
    hsm, ped = handshake()
    keys = [hsm._send._key, hsm._recv._key, ped._send._key, ped._recv._key]
    assert all(key is not None and any(key) for key in keys)
    hsm.close()
    ped.close()
    assert all(key == bytearray(32) for key in keys if key is not None)
    with pytest.raises(ChannelClosed):
        hsm.seal(b"x")
    hsm.close()  # idempotent


def test_no_secret_in_reprs_or_errors() -> None:
    initiator = ChannelInitiator(rpv=RPV, hsm_serial=SERIAL)
    frame = initiator.start()
    responder = ChannelResponder()
    init = responder.receive_init(frame)
    answer, ped = responder.accept(RPV)
    hsm = initiator.receive(answer)
    psk = bytes(derive_psk(RPV))
    texts = [repr(o) for o in (initiator, responder, init, frame, answer, hsm, ped)]
    for text in texts:
        for secret in (RPV, psk, init.noise_message):
            assert secret.hex() not in text and repr(secret)[2:-1] not in text


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.integers(0x20, 0x23))
def test_garbage_handshake_frames_raise_only_typed_errors(payload: bytes, type_: int) -> None:
    try:
        ChannelResponder().receive_init(Frame(type_, payload))
    except PedError:
        pass
    initiator = ChannelInitiator(rpv=RPV, hsm_serial=SERIAL)
    initiator.start()
    try:
        initiator.receive(Frame(type_, payload))
    except PedError:
        pass
