"""Objects of a clone in batches that each fit one relayed answer, then the end marker.

A clone of more objects than one answer of the client protocol holds (``MAX_OUTPUT``)
goes out in several: the target answers nothing until the end marker (it buffers and
stores nothing), and the relay asks the source for the next batch with an empty
``CLONE_FRAME`` (docs/protocol/cloning.md, section 7).
"""

from __future__ import annotations

from collections.abc import Iterator

from ped.channel.noise import wipe
from ped.cloning.stream import ObjectSender
from ped.ntls.values import MAX_OUTPUT
from ped.wire.framing import encode_frame

#: Room kept in each batch for the end marker (header 8, count 4, digest 32, tag 16).
END_ROOM = 64
#: An object to send: its public attributes (encoded) and its value (wiped once sealed).
Outgoing = tuple[bytes, bytearray]


class ObjectBatches:
    """Seals objects from *objects* into batches of at most *budget* bytes of frames."""

    def __init__(self, sender: ObjectSender, objects: Iterator[Outgoing],
                 budget: int = MAX_OUTPUT) -> None:  # fmt: skip
        self._sender = sender
        self._objects = objects
        self._budget = budget
        self._pending: bytes | None = None  # sealed already: safe to hold
        self.finished = False

    def __repr__(self) -> str:
        return f"ObjectBatches(finished={self.finished})"

    def next_batch(self) -> bytes:
        """The next objects (at least one, when any is left), the end marker after the last."""
        out = bytearray()
        while not self.finished:
            if self._pending is None:
                item = next(self._objects, None)
                if item is None:
                    out += encode_frame(self._sender.end())
                    self.finished = True
                    break
                text, value = item
                try:
                    self._pending = encode_frame(self._sender.send(text, value))
                finally:
                    wipe(value)
            if out and len(out) + len(self._pending) + END_ROOM > self._budget:
                break
            out += self._pending
            self._pending = None
        return bytes(out)
