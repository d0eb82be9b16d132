"""The object stream over an established cloning channel: numbered objects, an end marker
that commits to them, and the target's all-or-nothing verdict.

Theory of operation
-------------------
The source sends each object as a sealed ``CLONE_OBJECT`` (its number, public attributes
and value, encrypted and authenticated in the channel), numbered from 0, then a sealed
``CLONE_END`` with the count and the SHA-256 over every object plaintext in order.  The
channel's implicit nonces already refuse a reordered, replayed or dropped frame; the end
marker refuses a stream cut short after a whole object (a relay that stops forwarding
cannot make the target believe it has everything).

The target **stores nothing while objects arrive**: `ObjectReceiver` checks each frame
and buffers the object; only a valid ``CLONE_END`` yields `CloneComplete` with the whole
list, which the target stores in one transaction and then confirms with `accept_all`
(``CLONE_RESULT`` STORED) or refuses with `reject` (REJECTED, nothing stored).  The
source learns the verdict, authenticated, from `ObjectSender.receive_result`.

The states and their transitions are data (`SENDER_TRANSITIONS`,
`RECEIVER_TRANSITIONS`); any failure moves to ``FAILED`` and wipes the channel's keys.
"""

from __future__ import annotations

import enum
import hashlib
import hmac

import attrs

from ped.cloning.errors import CloneIncomplete, CloneMisuse, CloneProtocolError
from ped.cloning.handshake import CloneChannel
from ped.cloning.messages import (
    MAX_OBJECTS,
    ClonedObject,
    CloneResult,
    CloneType,
    EndMarker,
    ResultStatus,
)
from ped.errors import PedError
from ped.wire.framing import Frame


class SenderState(enum.Enum):
    SENDING = "sending"
    AWAIT_RESULT = "await result"
    DONE = "done"
    FAILED = "failed"


class ReceiverState(enum.Enum):
    RECEIVING = "receiving"
    VERIFIED = "verified"  # CLONE_END checked: the target may store, then answer
    DONE = "done"
    FAILED = "failed"


SENDER_TRANSITIONS: dict[tuple[SenderState, str], SenderState] = {
    (SenderState.SENDING, "object"): SenderState.SENDING,
    (SenderState.SENDING, "end"): SenderState.AWAIT_RESULT,
    (SenderState.AWAIT_RESULT, "result"): SenderState.DONE,
}
RECEIVER_TRANSITIONS: dict[tuple[ReceiverState, str], ReceiverState] = {
    (ReceiverState.RECEIVING, "object"): ReceiverState.RECEIVING,
    (ReceiverState.RECEIVING, "end"): ReceiverState.VERIFIED,
    (ReceiverState.VERIFIED, "accept"): ReceiverState.DONE,
    (ReceiverState.VERIFIED, "reject"): ReceiverState.DONE,
    (ReceiverState.RECEIVING, "reject"): ReceiverState.DONE,
}


@attrs.frozen(repr=False)
class CloneComplete:
    """Every object arrived and the end marker matches: store them all, or none."""

    objects: tuple[ClonedObject, ...]

    def __repr__(self) -> str:
        return f"CloneComplete(objects=<{len(self.objects)}>)"


class ObjectSender:
    """The source's end: `send` each object, `end`, then `receive_result`."""

    def __init__(self, channel: CloneChannel) -> None:
        if not channel.sends_objects:
            raise CloneMisuse("this end of the channel receives objects; use ObjectReceiver")
        self._channel = channel
        self._digest = hashlib.sha256()
        self._count = 0
        self.state = SenderState.SENDING

    def __repr__(self) -> str:
        return f"ObjectSender(state={self.state.value}, sent={self._count})"

    def _move(self, event: str) -> None:
        nxt = SENDER_TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise CloneMisuse(f"cannot {event} while {self.state.value}")
        self.state = nxt

    def send(self, attributes: bytes, value: bytes | bytearray) -> Frame:
        """One object, numbered in order; `CloneMisuse` past `MAX_OBJECTS`."""
        if self._count >= MAX_OBJECTS:
            raise CloneMisuse(f"a clone carries at most {MAX_OBJECTS} objects")
        self._move("object")
        plaintext = ClonedObject(self._count, attributes, bytes(value)).encode()
        self._digest.update(plaintext)
        self._count += 1
        return self._channel.seal(CloneType.CLONE_OBJECT, plaintext)

    def end(self) -> Frame:
        self._move("end")
        marker = EndMarker(self._count, self._digest.digest())
        return self._channel.seal(CloneType.CLONE_END, marker.encode())

    def receive_result(self, frame: Frame) -> CloneResult:
        """The target's verdict (STORED or REJECTED); the channel closes either way."""
        self._move("result")
        try:
            result = CloneResult.decode(self._channel.open(frame, CloneType.CLONE_RESULT))
            # A target that held some objects already (a restore with --add) stores fewer.
            if result.status is ResultStatus.STORED and result.stored > self._count:
                raise CloneProtocolError(
                    f"the target says it stored {result.stored} objects; {self._count} were sent"
                )
            return result
        except PedError:
            self.state = SenderState.FAILED
            raise
        finally:
            self._channel.close()


class ObjectReceiver:
    """The target's end: `receive` each frame; a `CloneComplete` once the end checks out."""

    def __init__(self, channel: CloneChannel) -> None:
        if channel.sends_objects:
            raise CloneMisuse("this end of the channel sends objects; use ObjectSender")
        self._channel = channel
        self._digest = hashlib.sha256()
        self._objects: list[ClonedObject] = []
        self.state = ReceiverState.RECEIVING

    def __repr__(self) -> str:
        return f"ObjectReceiver(state={self.state.value}, received={len(self._objects)})"

    def _move(self, event: str) -> None:
        nxt = RECEIVER_TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise CloneMisuse(f"cannot {event} while {self.state.value}")
        self.state = nxt

    def receive(self, frame: Frame) -> CloneComplete | None:
        """None while objects arrive; `CloneComplete` after a matching CLONE_END."""
        if self.state is not ReceiverState.RECEIVING:
            raise CloneMisuse(f"no frame is expected while {self.state.value}")
        try:
            plaintext = self._channel.open(frame, CloneType.CLONE_OBJECT, CloneType.CLONE_END)
            if frame.type == CloneType.CLONE_OBJECT:
                self._object(plaintext)
                return None
            return self._end(EndMarker.decode(plaintext))
        except PedError:
            self._fail()
            raise

    def _object(self, plaintext: bytes) -> None:
        obj = ClonedObject.decode(plaintext)
        if obj.index != len(self._objects):
            raise CloneProtocolError(
                f"object number {obj.index} arrived where {len(self._objects)} was due"
            )
        self._move("object")
        self._digest.update(plaintext)
        self._objects.append(obj)

    def _end(self, marker: EndMarker) -> CloneComplete:
        if marker.count != len(self._objects) or not hmac.compare_digest(
            marker.digest, self._digest.digest()
        ):
            raise CloneIncomplete(
                f"the end marker commits to {marker.count} objects; {len(self._objects)} "
                "arrived (or their digest differs): nothing is stored"
            )
        self._move("end")
        return CloneComplete(tuple(self._objects))

    def accept_all(self, stored: int | None = None) -> Frame:
        """CLONE_RESULT STORED: call once every object is durably stored (*stored*: how
        many were new to the target, when it kept some it held already; else all)."""
        self._move("accept")
        count = len(self._objects) if stored is None else stored
        if not 0 <= count <= len(self._objects):
            raise CloneMisuse(f"stored {count} of {len(self._objects)} objects?")
        try:
            result = CloneResult(ResultStatus.STORED, count)
            return self._channel.seal(CloneType.CLONE_RESULT, result.encode())
        finally:
            self._finish()

    def reject(self, detail: str) -> Frame:
        """CLONE_RESULT REJECTED: nothing was stored (*detail* is shown to the source)."""
        self._move("reject")
        try:
            result = CloneResult(ResultStatus.REJECTED, 0, detail)
            return self._channel.seal(CloneType.CLONE_RESULT, result.encode())
        finally:
            self._finish()

    def _finish(self) -> None:
        self._objects.clear()
        self._channel.close()

    def _fail(self) -> None:
        self.state = ReceiverState.FAILED
        self._objects.clear()
        self._channel.close()
