"""docs/protocol/pake.md's test vectors are exactly what ped.pake produces."""

from __future__ import annotations

from pathlib import Path

from ped.channel import derive_psk
from ped.pake import OneTimePassword, PakeInitiator, PakeResponder, cpace
from ped.pake.handshake import channel_identifier
from ped.wire.framing import decode_frame, encode_frame
from tests.ped.vectors.blocks import document_vectors as read_vectors

PAKE_MD = Path(__file__).resolve().parents[2] / "docs" / "protocol" / "pake.md"

PASSWORD = "12345678"
SERIAL = "150001"
SID = bytes(range(0x60, 0x70))
YA = bytes(range(0x20, 0x40))
YB = bytes(range(0x40, 0x60))


def compute() -> dict[str, str]:
    pw = OneTimePassword(PASSWORD, issued_at=0.0)
    hsm = PakeInitiator(pw, hsm_serial=SERIAL, entry_timeout_ms=200_000, now=0.0, sid=SID,
                        scalar=YA)
    init = hsm.init_frame()
    ped = PakeResponder()
    ped.receive_init(init)
    response, ped_key = ped.answer(PASSWORD.encode(), scalar=YB)
    hsm_key = hsm.receive(response, 0.0)
    assert hsm_key == ped_key
    wrong = PakeResponder()
    wrong.receive_init(init)
    _, wrong_key = wrong.answer(b"12345679", scalar=YB)
    ci = channel_identifier(SERIAL)
    g = cpace.calculate_generator(PASSWORD.encode(), ci, SID)
    ya_share = cpace.scalar_mult(YA, g)
    yb_share = cpace.scalar_mult(YB, g)
    k = cpace.scalar_mult(YA, yb_share)
    init_payload = init.payload
    transcript = cpace.transcript_ir(ya_share, init_payload[:-32], yb_share, b"\x01")
    isk = cpace.intermediate_key(SID, k, transcript)
    return {
        "pake_ci": ci.hex(),
        "pake_generator": g.hex(),
        "pake_share_hsm": ya_share.hex(),
        "pake_share_ped": yb_share.hex(),
        "pake_k": k.hex(),
        "pake_isk": bytes(isk).hex(),
        "pake_channel_key": bytes(hsm_key).hex(),
        "pake_psk": bytes(derive_psk(hsm_key)).hex(),
        "pake_channel_key_ped_wrong_password": bytes(wrong_key).hex(),
        "frame_pake_init": encode_frame(init).hex(),
        "frame_pake_response": encode_frame(response).hex(),
    }


def document_vectors() -> dict[str, str]:
    return read_vectors(PAKE_MD)


def test_document_matches_code() -> None:
    assert document_vectors() == compute()


def test_frames_decode() -> None:
    vectors = document_vectors()
    init = decode_frame(bytes.fromhex(vectors["frame_pake_init"]))
    assert init.type == 0x24 and init.payload.endswith(bytes.fromhex(vectors["pake_share_hsm"]))
    response = decode_frame(bytes.fromhex(vectors["frame_pake_response"]))
    assert response.type == 0x25
    assert response.payload == b"\x01" + bytes.fromhex(vectors["pake_share_ped"])
