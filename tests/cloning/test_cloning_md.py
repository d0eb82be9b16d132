"""docs/protocol/cloning.md's test vectors are exactly what ped.cloning produces."""

from __future__ import annotations

from pathlib import Path

import pytest

from ped.cloning import (
    CloneDirection,
    CloneInitiator,
    CloneRefuseReason,
    CloneResponder,
    DomainMismatch,
    ObjectReceiver,
    ObjectSender,
    derive_clone_psk,
    domain_fingerprint,
)
from ped.cloning.handshake import prologue
from ped.wire.framing import decode_frame, encode_frame
from tests.ped.vectors.blocks import document_vectors as read_vectors

CLONING_MD = Path(__file__).resolve().parents[2] / "docs" / "protocol" / "cloning.md"

DOMAIN = bytes(range(0x80, 0xA0))
OTHER = bytes(range(0xA0, 0xC0))
E_INITIATOR = bytes(range(0x20, 0x40))
E_RESPONDER = bytes(range(0x40, 0x60))
SOURCE, TARGET = "150001001", "150002001"
OBJECTS = [(b"label=key-1", bytes(range(0xC0, 0xE0))), (b"label=key-2", bytes(range(0xE0, 0x100)))]


def _initiator() -> CloneInitiator:
    return CloneInitiator(
        domain=DOMAIN, direction=CloneDirection.INITIATOR_SENDS, source_serial=SOURCE,
        target_serial=TARGET, ephemeral_private=E_INITIATOR,
    )


def compute() -> dict[str, str]:
    initiator = _initiator()
    init = initiator.start()
    responder = CloneResponder(ephemeral_private=E_RESPONDER)
    responder.receive_init(init)
    accept, target = responder.accept(DOMAIN)
    source = initiator.receive(accept)
    assert source.handshake_hash == target.handshake_hash
    sender, receiver = ObjectSender(source), ObjectReceiver(target)
    frames = [sender.send(a, v) for a, v in OBJECTS]
    end = sender.end()
    for frame in frames:
        receiver.receive(frame)
    assert receiver.receive(end) is not None
    result = receiver.accept_all()
    sender.receive_result(result)

    wrong = CloneResponder(ephemeral_private=E_RESPONDER)
    wrong.receive_init(init)
    with pytest.raises(DomainMismatch):
        wrong.accept(OTHER)
    refused = wrong.refuse(CloneRefuseReason.DOMAIN_MISMATCH)
    return {
        "domain": DOMAIN.hex(),
        "other_domain": OTHER.hex(),
        "e_initiator_private": E_INITIATOR.hex(),
        "e_responder_private": E_RESPONDER.hex(),
        "clone_psk": bytes(derive_clone_psk(DOMAIN)).hex(),
        "fingerprint": domain_fingerprint(DOMAIN).hex(),
        "other_fingerprint": domain_fingerprint(OTHER).hex(),
        "prologue": prologue(initiator.init).hex(),
        "frame_clone_init": encode_frame(init).hex(),
        "frame_clone_accept": encode_frame(accept).hex(),
        "handshake_hash": source.handshake_hash.hex(),
        "frame_clone_object_0": encode_frame(frames[0]).hex(),
        "frame_clone_object_1": encode_frame(frames[1]).hex(),
        "frame_clone_end": encode_frame(end).hex(),
        "frame_clone_result": encode_frame(result).hex(),
        "frame_clone_refused": encode_frame(refused).hex(),
    }


def document_vectors() -> dict[str, str]:
    return read_vectors(CLONING_MD)


def test_document_matches_code() -> None:
    assert document_vectors() == compute()


def test_documented_frames_replay_through_a_fresh_target() -> None:
    vectors = document_vectors()
    responder = CloneResponder(ephemeral_private=E_RESPONDER)
    responder.receive_init(decode_frame(bytes.fromhex(vectors["frame_clone_init"])))
    accept, target = responder.accept(DOMAIN)
    assert encode_frame(accept).hex() == vectors["frame_clone_accept"]
    receiver = ObjectReceiver(target)
    for name in ("frame_clone_object_0", "frame_clone_object_1"):
        assert receiver.receive(decode_frame(bytes.fromhex(vectors[name]))) is None
    complete = receiver.receive(decode_frame(bytes.fromhex(vectors["frame_clone_end"])))
    assert complete is not None
    assert [(o.attributes, o.value) for o in complete.objects] == OBJECTS
