"""PROTOCOL.md's test vectors are exactly what the code produces, and decode back."""

from __future__ import annotations

import hashlib
import warnings

from noise.connection import Keypair, NoiseConnection

from ped.channel import PROTOCOL_NAME, derive_psk
from ped.ops.messages import decode_message
from ped.wire.framing import decode_frame

from .blocks import REPO
from .blocks import document_vectors as vectors_in
from .generate import E_HSM, E_PED, KEYSET, RPV, SECRET, compute

PROTOCOL_MD = REPO / "PROTOCOL.md"


def document_vectors() -> dict[str, str]:
    return vectors_in(PROTOCOL_MD)


def test_document_matches_code() -> None:
    assert document_vectors() == compute()


def test_operation_vectors_decode_and_reencode() -> None:
    for name, value in document_vectors().items():
        if name.startswith("op_"):
            data = bytes.fromhex(value)
            assert decode_message(data).encode() == data


def test_handshake_vectors_against_the_noise_oracle() -> None:
    vectors = document_vectors()
    init = decode_frame(bytes.fromhex(vectors["frame_handshake_init"]))
    response = decode_frame(bytes.fromhex(vectors["frame_handshake_response"]))
    prologue = bytes.fromhex(vectors["prologue"])
    assert bytes(derive_psk(RPV)).hex() == vectors["psk"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        hsm = NoiseConnection.from_name(PROTOCOL_NAME)
        hsm.set_psks(psk=bytes.fromhex(vectors["psk"]))
        hsm.set_prologue(prologue)
        hsm.set_keypair_from_private_bytes(Keypair.EPHEMERAL, E_HSM)
        hsm.set_as_initiator()
        hsm.start_handshake()
        message1 = hsm.write_message(b"")
    assert init.payload.endswith(len(message1).to_bytes(2, "big") + message1)
    hsm.read_message(response.payload[2:])
    assert hsm.get_handshake_hash().hex() == vectors["handshake_hash"]
    assert init.payload[0] == 2  # suite 2: padded SEALED plaintexts
    sealed = decode_frame(bytes.fromhex(vectors["sealed_1_hsm_to_ped_read_secret"]))
    assert hsm.encrypt(padded(bytes.fromhex(vectors["op_read_secret"]))) == sealed.payload
    notice = decode_frame(bytes.fromhex(vectors["sealed_2_ped_to_hsm_notice"]))
    assert decode_message(unpadded(hsm.decrypt(notice.payload))).op_id == 1  # type: ignore[union-attr]
    result = decode_frame(bytes.fromhex(vectors["sealed_3_ped_to_hsm_read_result"]))
    assert hsm.decrypt(result.payload) == padded(bytes.fromhex(vectors["op_read_result"]))
    goodbye = decode_frame(bytes.fromhex(vectors["sealed_4_hsm_to_ped_goodbye"]))
    assert hsm.encrypt(padded(bytes.fromhex(vectors["op_goodbye"]))) == goodbye.payload
    assert E_PED.hex() == vectors["e_ped_private"]
    # Every SEALED frame of the session is one size: 8 + 544 + 16 bytes.
    assert {len(bytes.fromhex(vectors[n])) for n in vectors if n.startswith("sealed_")} == {568}


def test_suite_1_vectors_against_the_noise_oracle_unpadded() -> None:
    vectors = document_vectors()
    init = decode_frame(bytes.fromhex(vectors["suite1_frame_handshake_init"]))
    assert init.payload[0] == 1
    prologue = b"remote-ped e2e" + bytes([1]) + init.payload[: len(init.payload) - 50]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        hsm = NoiseConnection.from_name(PROTOCOL_NAME)
        hsm.set_psks(psk=bytes(derive_psk(RPV)))
        hsm.set_prologue(prologue)
        hsm.set_keypair_from_private_bytes(Keypair.EPHEMERAL, E_HSM)
        hsm.set_as_initiator()
        hsm.start_handshake()
        assert init.payload.endswith(hsm.write_message(b""))
    response = decode_frame(bytes.fromhex(vectors["suite1_frame_handshake_response"]))
    hsm.read_message(response.payload[2:])
    sealed = decode_frame(bytes.fromhex(vectors["suite1_sealed_1_hsm_to_ped_read_secret"]))
    assert hsm.encrypt(bytes.fromhex(vectors["op_read_secret"])) == sealed.payload
    notice = decode_frame(bytes.fromhex(vectors["suite1_sealed_2_ped_to_hsm_notice"]))
    assert decode_message(hsm.decrypt(notice.payload)).op_id == 1  # type: ignore[union-attr]
    result = decode_frame(bytes.fromhex(vectors["suite1_sealed_3_ped_to_hsm_read_result"]))
    assert hsm.decrypt(result.payload) == bytes.fromhex(vectors["op_read_result"])


def test_keyset_vectors_from_the_documented_formulas() -> None:
    """PROTOCOL.md 4.1, computed with the standard library only."""
    vectors = document_vectors()
    digest = hashlib.sha256(b"remote-ped/keyset-fingerprint/v1\x00" + KEYSET + SECRET).digest()
    assert digest[:8].hex() == vectors["keyset_fingerprint"]
    derived = hashlib.scrypt(
        SECRET + b"1234",
        salt=b"remote-ped/ped-pin/v1\x00" + KEYSET,
        n=2**15,
        r=8,
        p=1,
        maxmem=64 * 1024 * 1024,
        dklen=32,
    )
    assert derived.hex() == vectors["pin_secret_1234"]


def padded(message: bytes) -> bytes:
    """PROTOCOL.md 3.6, written here from the document: u16 length, message, zeros to 544."""
    body = len(message).to_bytes(2, "big") + message
    return body + bytes(-len(body) % 544)


def unpadded(body: bytes) -> bytes:
    length = int.from_bytes(body[:2], "big")
    assert len(body) % 544 == 0 and not any(body[2 + length :])
    return body[2 : 2 + length]
