"""ped.cloning: the handshake refuses other domains, the stream is all or nothing."""

from __future__ import annotations

import attrs
import pytest

from ped.channel import derive_psk
from ped.cloning import (
    CloneAuthFailed,
    CloneDirection,
    CloneIncomplete,
    CloneInitiator,
    CloneMisuse,
    CloneProtocolError,
    CloneRefuseReason,
    CloneResponder,
    CloneType,
    DomainMismatch,
    ObjectReceiver,
    ObjectSender,
    ResultStatus,
    derive_clone_psk,
    domain_fingerprint,
    format_fingerprint,
)
from ped.cloning.handshake import CloneChannel
from ped.wire.framing import Frame

DOMAIN = bytes(range(0x80, 0xA0))
OTHER = bytes(range(0xA0, 0xC0))


def handshake(
    source: bytes = DOMAIN,
    target: bytes = DOMAIN,
    direction: CloneDirection = CloneDirection.INITIATOR_SENDS,
) -> tuple[CloneChannel, CloneChannel]:
    initiator = CloneInitiator(
        domain=source, direction=direction, source_serial="150001001", target_serial="150002001"
    )
    responder = CloneResponder()
    init = responder.receive_init(initiator.start())
    assert (init.source_serial, init.target_serial) == ("150001001", "150002001")
    accept, target_channel = responder.accept(target)
    return initiator.receive(accept), target_channel


def test_same_domain_moves_every_object() -> None:
    source, target = handshake()
    sender, receiver = ObjectSender(source), ObjectReceiver(target)
    objects = [(b"attrs %d" % i, b"secret value %d" % i) for i in range(5)]
    for attributes, value in objects:
        assert receiver.receive(sender.send(attributes, value)) is None
    complete = receiver.receive(sender.end())
    assert complete is not None
    assert [(o.attributes, o.value) for o in complete.objects] == objects
    result = sender.receive_result(receiver.accept_all())
    assert (result.status, result.stored) == (ResultStatus.STORED, 5)
    assert source.closed and target.closed


def test_other_domain_fails_at_the_handshake_on_both_sides() -> None:
    initiator = CloneInitiator(
        domain=DOMAIN, direction=CloneDirection.INITIATOR_SENDS,
        source_serial="150001001", target_serial="150002001",
    )
    responder = CloneResponder()
    responder.receive_init(initiator.start())
    with pytest.raises(DomainMismatch) as target_side:
        responder.accept(OTHER)
    refused = responder.refuse(CloneRefuseReason.DOMAIN_MISMATCH)
    with pytest.raises(DomainMismatch) as source_side:
        initiator.receive(refused)
    ours, theirs = (format_fingerprint(domain_fingerprint(d)) for d in (DOMAIN, OTHER))
    assert (source_side.value.ours, source_side.value.theirs) == (ours, theirs)
    assert (target_side.value.ours, target_side.value.theirs) == (theirs, ours)
    for exc in (source_side.value, target_side.value):
        assert DOMAIN.hex() not in str(exc) and OTHER.hex() not in str(exc)
        assert "--domain-from-red-key" in str(exc)


def test_the_domain_psk_is_not_the_rpv_psk() -> None:
    assert derive_clone_psk(DOMAIN) != derive_psk(DOMAIN)


@pytest.mark.parametrize("field", ["source_serial", "target_serial", "direction"])
def test_a_relay_that_rewrites_a_clear_field_breaks_the_handshake(field: str) -> None:
    initiator = CloneInitiator(
        domain=DOMAIN, direction=CloneDirection.INITIATOR_SENDS,
        source_serial="150001001", target_serial="150002001",
    )
    frame = initiator.start()
    changed = {
        "source_serial": ("150001001", "150009001"),
        "target_serial": ("150002001", "150009001"),
        "direction": (b"\x01\x01", b"\x01\x02"),
    }[field]
    old, new = (v.encode() if isinstance(v, str) else v for v in changed)
    responder = CloneResponder()
    responder.receive_init(Frame(frame.type, frame.payload.replace(old, new, 1)))
    with pytest.raises(DomainMismatch):
        responder.accept(DOMAIN)


def test_the_direction_decides_who_sends() -> None:
    source, target = handshake(direction=CloneDirection.RESPONDER_SENDS)
    assert target.sends_objects and not source.sends_objects
    with pytest.raises(CloneMisuse):
        ObjectSender(source)
    sender, receiver = ObjectSender(target), ObjectReceiver(source)
    assert receiver.receive(sender.send(b"a", b"v")) is None
    complete = receiver.receive(sender.end())
    assert complete is not None and len(complete.objects) == 1


def test_a_stream_cut_before_the_end_yields_nothing() -> None:
    source, target = handshake()
    sender, receiver = ObjectSender(source), ObjectReceiver(target)
    frames = [sender.send(b"a", b"v%d" % i) for i in range(3)]
    for frame in frames:
        assert receiver.receive(frame) is None
    # No CLONE_END: the receiver never hands out an object.
    frame = receiver.reject("the source went away")
    result = sender.receive_result(_after_end(sender, frame))
    assert (result.status, result.stored) == (ResultStatus.REJECTED, 0)


def _after_end(sender: ObjectSender, frame: Frame) -> Frame:
    sender.end()  # the source ended, but its CLONE_END was lost
    return frame


def test_a_dropped_object_fails_authentication() -> None:
    source, target = handshake()
    sender, receiver = ObjectSender(source), ObjectReceiver(target)
    sender.send(b"a", b"v0")  # lost in transit
    with pytest.raises(CloneAuthFailed):
        receiver.receive(sender.send(b"a", b"v1"))
    assert target.closed


def test_a_sealed_frame_cannot_change_type() -> None:
    source, target = handshake()
    sender, receiver = ObjectSender(source), ObjectReceiver(target)
    frame = sender.send(b"a", b"v0")
    with pytest.raises(CloneAuthFailed):
        receiver.receive(Frame(CloneType.CLONE_END, frame.payload))


def test_an_end_marker_that_does_not_match_stores_nothing() -> None:
    source, target = handshake()
    sender, receiver = ObjectSender(source), ObjectReceiver(target)
    receiver.receive(sender.send(b"a", b"v0"))
    # A source that lies about the count (it holds the keys): the target refuses.
    sender._count = 2  # forging a count needs the source's own state
    with pytest.raises(CloneIncomplete):
        receiver.receive(sender.end())
    assert target.closed


def test_frames_outside_the_protocol_are_refused() -> None:
    _, target = handshake()
    receiver = ObjectReceiver(target)
    with pytest.raises(CloneProtocolError):
        receiver.receive(Frame(CloneType.CLONE_RESULT, bytes(32)))


def test_nothing_secret_in_reprs() -> None:
    source, target = handshake()
    sender, receiver = ObjectSender(source), ObjectReceiver(target)
    receiver.receive(sender.send(b"public", b"TOP-SECRET-VALUE"))
    complete = receiver.receive(sender.end())
    assert complete is not None
    texts = [repr(x) for x in (source, target, sender, receiver, complete, *complete.objects)]
    assert not any("TOP-SECRET" in t or DOMAIN.hex() in t for t in texts)
    assert attrs.has(type(complete.objects[0]))
