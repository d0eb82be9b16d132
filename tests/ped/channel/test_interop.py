"""Interoperability with the independent `noiseprotocol` package, both directions.

`noiseprotocol` is only a test oracle: if our Noise_NNpsk0_25519_ChaChaPoly_SHA256 ever
diverged from the specification, one of these tests would fail.  The oracle knows nothing
of suite 2's padding: `padded` below writes it from PROTOCOL.md 3.6, independently of
``ped.channel.padding``.
"""

from __future__ import annotations

import pytest
from noise.connection import Keypair, NoiseConnection

from ped.channel import (
    PROTOCOL_NAME,
    SUITE_NNPSK0_V1,
    ChannelInitiator,
    ChannelResponder,
    HandshakeInit,
    PedInfo,
    derive_psk,
)
from ped.wire.codec import Writer
from ped.wire.framing import Frame
from ped.wire.types import E2EType

# The oracle warns when an ephemeral key is injected; that is exactly what vectors do.
pytestmark = pytest.mark.filterwarnings("ignore:One of ephemeral keypairs:UserWarning")

RPV = bytes(range(32))
SERIAL = "150001"
E_HSM = bytes.fromhex("a8" * 32)
E_PED = bytes.fromhex("b0" * 32)


def padded(message: bytes) -> bytes:
    """PROTOCOL.md 3.6: u16 length, the message, zeros up to a multiple of 544 bytes."""
    body = len(message).to_bytes(2, "big") + message
    return body + bytes(-len(body) % 544)


def oracle(prologue: bytes, *, initiator: bool, ephemeral: bytes | None) -> NoiseConnection:
    conn = NoiseConnection.from_name(PROTOCOL_NAME)
    conn.set_psks(psk=bytes(derive_psk(RPV)))
    conn.set_prologue(prologue)
    if ephemeral is not None:
        conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral)
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.start_handshake()
    return conn


@pytest.mark.parametrize("fixed", [True, False])
def test_our_hsm_with_oracle_ped(fixed: bool) -> None:
    ours = ChannelInitiator(rpv=RPV, hsm_serial=SERIAL, ephemeral_private=E_HSM if fixed else None)
    init = HandshakeInit.from_frame(ours.start())
    ped = oracle(init.prologue(), initiator=False, ephemeral=E_PED if fixed else None)
    assert ped.read_message(init.noise_message) == b""
    message2 = ped.write_message(PedInfo("oracle", "N-1", "0.3.1").encode())
    channel = ours.receive(Frame(E2EType.HANDSHAKE_RESPONSE, Writer().bytes16(message2).getvalue()))
    assert ours.peer_info == PedInfo("oracle", "N-1", "0.3.1")
    assert ped.handshake_finished
    assert channel.handshake_hash == ped.get_handshake_hash()
    for i in range(4):
        sealed = channel.seal(b"hsm->ped %d" % i)
        assert len(sealed.payload) == 544 + 16
        assert ped.decrypt(sealed.payload) == padded(b"hsm->ped %d" % i)
        frame = Frame(E2EType.SEALED, ped.encrypt(padded(b"ped->hsm %d" % i)))
        assert channel.open(frame) == b"ped->hsm %d" % i


@pytest.mark.parametrize("fixed", [True, False])
def test_oracle_hsm_with_our_ped(fixed: bool) -> None:
    template = HandshakeInit(SERIAL, 200_000, bytes(48))
    hsm = oracle(template.prologue(), initiator=True, ephemeral=E_HSM if fixed else None)
    message1 = hsm.write_message(b"")
    ours = ChannelResponder(
        ped_info=PedInfo("ours", "P-1", "1"), ephemeral_private=E_PED if fixed else None
    )
    ours.receive_init(HandshakeInit(SERIAL, 200_000, message1).to_frame())
    response, channel = ours.accept(RPV)
    info_size = len(PedInfo("ours", "P-1", "1").encode())
    assert response.payload[:2] == (48 + info_size).to_bytes(2, "big")  # e, tag, PedInfo
    assert PedInfo.decode(hsm.read_message(response.payload[2:])) == PedInfo("ours", "P-1", "1")
    assert hsm.handshake_finished
    assert channel.handshake_hash == hsm.get_handshake_hash()
    for i in range(4):
        frame = Frame(E2EType.SEALED, hsm.encrypt(padded(b"hsm->ped %d" % i)))
        assert channel.open(frame) == b"hsm->ped %d" % i
        assert hsm.decrypt(channel.seal(b"ped->hsm %d" % i).payload) == padded(b"ped->hsm %d" % i)


def test_oracle_hsm_of_suite_1_with_our_ped_unpadded() -> None:
    """An HSM built before suite 2 (no padding) still works with this PED."""
    template = HandshakeInit(SERIAL, 200_000, bytes(48), SUITE_NNPSK0_V1)
    hsm = oracle(template.prologue(), initiator=True, ephemeral=None)
    ours = ChannelResponder()
    ours.receive_init(HandshakeInit(SERIAL, 200_000, hsm.write_message(b""), 1).to_frame())
    response, channel = ours.accept(RPV)
    hsm.read_message(response.payload[2:])
    assert not channel.padded
    assert channel.open(Frame(E2EType.SEALED, hsm.encrypt(b"old hsm"))) == b"old hsm"
    assert hsm.decrypt(channel.seal(b"answer").payload) == b"answer"


def test_fixed_ephemeral_messages_are_byte_identical() -> None:
    ours = ChannelInitiator(rpv=RPV, hsm_serial=SERIAL, ephemeral_private=E_HSM)
    init = HandshakeInit.from_frame(ours.start())
    theirs = oracle(init.prologue(), initiator=True, ephemeral=E_HSM)
    assert theirs.write_message(b"") == init.noise_message
