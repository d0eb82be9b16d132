"""The cloning protocol's fuzz target: both ends of ``ped.cloning`` fed whatever the peer sends.

Input: byte 0 picks the end under test (even: the target, which answers CLONE_INIT and
receives objects; odd: the source, which opened the channel and sends two objects once
it is accepted), byte 1 the size of the pieces the rest arrives in (1-64 bytes); the
rest is the peer's byte stream, cut into frames by ``ped.wire``'s decoder.  Both ends
use fixed ephemeral keys and domain (those of docs/protocol/cloning.md's vectors), so
the `seeds` (that document's frames) authenticate and mutations of them reach the
checks behind the tags.  Only the project's typed errors (`PedError`) may come out.
"""

from __future__ import annotations

from ped.cloning import (
    CloneDirection,
    CloneInitiator,
    CloneRefuseReason,
    CloneResponder,
    DomainMismatch,
    ObjectReceiver,
    ObjectSender,
)
from ped.errors import PedError
from ped.wire.framing import NEED_DATA, Frame, FrameDecoder, encode_frame

DOMAIN = bytes(range(0x80, 0xA0))
E_INITIATOR = bytes(range(0x20, 0x40))
E_RESPONDER = bytes(range(0x40, 0x60))
OBJECTS = ((b"label=key-1", bytes(range(0xC0, 0xE0))), (b"label=key-2", bytes(range(0xE0, 0x100))))


def _initiator() -> CloneInitiator:
    return CloneInitiator(
        domain=DOMAIN, direction=CloneDirection.INITIATOR_SENDS, source_serial="150001001",
        target_serial="150002001", ephemeral_private=E_INITIATOR,
    )


class _Target:
    def __init__(self) -> None:
        self.responder = CloneResponder(ephemeral_private=E_RESPONDER)
        self.receiver: ObjectReceiver | None = None

    def feed(self, frame: Frame) -> None:
        if self.receiver is None:
            self.responder.receive_init(frame)
            try:
                _, channel = self.responder.accept(DOMAIN)
            except DomainMismatch:
                self.responder.refuse(CloneRefuseReason.DOMAIN_MISMATCH)
                raise
            self.receiver = ObjectReceiver(channel)
        elif self.receiver.receive(frame) is not None:
            self.receiver.accept_all()


class _Source:
    def __init__(self) -> None:
        self.initiator = _initiator()
        self.initiator.start()
        self.sender: ObjectSender | None = None

    def feed(self, frame: Frame) -> None:
        if self.sender is None:
            self.sender = ObjectSender(self.initiator.receive(frame))
            for attributes, value in OBJECTS:
                self.sender.send(attributes, value)
            self.sender.end()
        else:
            self.sender.receive_result(frame)


def one_cloning(data: bytes) -> None:
    if len(data) < 2:
        return
    end: _Target | _Source = _Target() if data[0] % 2 == 0 else _Source()
    piece = data[1] % 64 + 1
    decoder = FrameDecoder()
    stream = data[2:]
    try:
        for start in range(0, len(stream), piece):
            decoder.feed(stream[start : start + piece])
            while (frame := decoder.next_frame()) is not NEED_DATA:
                end.feed(frame)
    except PedError:
        pass


def seeds() -> list[bytes]:
    """A whole clone as each end sees it, and the refusal of another domain."""
    initiator = _initiator()
    init = initiator.start()
    responder = CloneResponder(ephemeral_private=E_RESPONDER)
    responder.receive_init(init)
    accept, target = responder.accept(DOMAIN)
    sender = ObjectSender(initiator.receive(accept))
    objects = [sender.send(a, v) for a, v in OBJECTS]
    end = sender.end()
    receiver = ObjectReceiver(target)
    for frame in (*objects, end):
        receiver.receive(frame)
    result = receiver.accept_all()
    to_target = b"".join(encode_frame(f) for f in (init, *objects, end))
    to_source = b"".join(encode_frame(f) for f in (accept, result))
    refusal = CloneResponder()
    refusal.receive_init(init)
    refused = encode_frame(refusal.refuse(CloneRefuseReason.BUSY, "fuzz"))
    return [b"\x00\x3f" + to_target, b"\x00\x05" + to_target, b"\x01\x3f" + to_source,
            b"\x01\x3f" + refused, b"\x00\x3f" + to_target[:90]]  # fmt: skip
