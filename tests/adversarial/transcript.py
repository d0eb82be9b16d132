"""A deterministic HSM <-> PED session through a hostile relay, sans-IO.

Theory of operation
-------------------
The two real state machines (`ped.ops.HsmSideSession`, `ped.ops.PedSideSession`) talk
through two `Wire`s, one per direction.  Each wire is what a relay controls: it takes
the frames one end sends, may alter the byte stream (flip one bit, cut it) or the frame
sequence (drop, duplicate, hold one back behind the next), and feeds what is left to the
receiver's own `FrameDecoder`, exactly as a transport would.

Both ends use fixed ephemeral keys, so the genuine session is byte-for-byte the same
every run and an alteration at byte *n* of a direction always hits the same field of the
same message.  (Real sessions use fresh ephemerals; `test_replay` covers what that adds.)

The session is the one an HSM runs when it imprints and then logs in, so that secrets
travel both ways: handshake; READ_SECRET, answered by a NOTICE and a READ_RESULT (the
PED's secret goes to the HSM); IMPRINT with a new secret (the HSM's secret goes to the
PED), answered by IMPRINT_RESULT; GOODBYE.

The driver is event-driven: the HSM sends its next request only when the previous answer
arrived, the PED answers each request it is given.  When nothing moves any more, a held
frame is released (holding a frame for ever is a drop); when still nothing moves, both
streams end: the HSM, still waiting, would hit its operation timeout (`OperationTimeout`
in ``ped.hsm_api``) and the PED sees end of stream.

`Outcome` records what each end accepted, so tests can state the security property
directly: whatever the relay does, the PED serves only requests the HSM really sent,
each at most once and unaltered, and the HSM accepts only the answers the PED really
gave.  Whoever received the altered bytes ends with a typed error.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from keys.colors import Color
from ped.channel import PedInfo, derive_psk
from ped.channel.noise import TAGLEN
from ped.errors import PedError
from ped.ops import HsmSideSession, OperationTimeout, PedSideSession
from ped.ops import events as ev
from ped.ops.messages import ImprintResult, NoticeKind, ReadResult
from ped.wire.framing import NEED_DATA, Frame, FrameDecoder, encode_frame
from ped.wire.types import E2E_TYPES, E2EType

RPV = bytes(range(32))
SERIAL = "150001"
E_HSM = bytes(range(0x20, 0x40))
E_PED = bytes(range(0x40, 0x60))
#: The secret the PED reads from the blue keyset and sends to the HSM.
READ_SECRET = bytes([0xC3]) * 32
#: The secret the HSM sends to the PED to imprint on black keys.
IMPRINT_SECRET = bytes([0x3C]) * 32
KEYSET = bytes(range(0xA0, 0xB0))
NEW_KEYSET = bytes(range(0xB0, 0xC0))
#: Every secret of the session: none may ever appear on the wire or in any message.
SECRETS = (RPV, bytes(derive_psk(RPV)), READ_SECRET, IMPRINT_SECRET)


#: Bytes at the start of a SEALED payload whose every bit is flipped: the ciphertext of
#: suite 2's length field and of every message of this session (the largest is 65 bytes).
SEALED_HEAD = 128


def bits_to_flip(frames: list[bytes]) -> Iterator[tuple[int, int]]:
    """(stream offset, bit) pairs: every bit of every byte of *frames*, except inside the
    padding of a SEALED frame, where each byte has one bit flipped (cycling 0-7).

    Past `SEALED_HEAD` and before the tag, a SEALED payload is the ciphertext of suite 2's
    zero padding: to the AEAD every one of those ~400 bytes is alike (any change fails the
    tag), so flipping all 8 bits of each would multiply the run time by 8 for nothing.
    """
    offset = 0
    for frame in frames:
        sealed = frame[3] == E2EType.SEALED
        for index in range(len(frame)):
            padding = sealed and 8 + SEALED_HEAD <= index < len(frame) - TAGLEN
            position = offset + index
            yield from ((position, bit) for bit in ((position % 8,) if padding else range(8)))
        offset += len(frame)


@attrs.define
class Wire:
    """One direction of the relay.  Frame indices and byte offsets count from 0."""

    flip_at: int | None = None  # flip one bit of this byte of the stream...
    flip_bit: int = 0  # ...this one (0-7)
    cut_at: int | None = None  # the stream ends after this many bytes
    drop: int | None = None  # this frame never arrives
    duplicate: int | None = None  # this frame arrives twice
    hold: int | None = None  # this frame arrives after the next one
    sent: list[bytes] = attrs.field(factory=list)  # genuine frames, as the sender sent them
    delivered: bytes = b""  # bytes the receiver got
    swapped: bool = False
    error: PedError | None = None  # the receiver's frame layer refused the stream
    _offset: int = 0
    _held: bytes | None = None
    _decoder: FrameDecoder = attrs.field(factory=lambda: FrameDecoder(accepted=E2E_TYPES))

    def carry(self, frame: Frame) -> list[Frame]:
        index = len(self.sent)
        data = encode_frame(frame)
        self.sent.append(data)
        out: list[bytes] = []
        if index == self.drop:
            pass
        elif index == self.hold:
            self._held = data
        else:
            out.append(data)
            if index == self.duplicate:
                out.append(data)
            if self._held is not None:
                out.append(self._held)
                self._held = None
                self.swapped = True
        return self._feed(b"".join(out))

    def release(self) -> list[Frame] | None:
        """Deliver a held frame (the relay gave up waiting); None if none was held."""
        if self._held is None:
            return None
        data, self._held = self._held, None
        return self._feed(data)

    def end(self) -> None:
        """The stream ends here; a partial frame left over is refused."""
        if self.error is None:
            try:
                self._decoder.check_eof()
            except PedError as exc:
                self.error = exc

    def _feed(self, data: bytes) -> list[Frame]:
        data = self._alter(data)
        if not data or self.error is not None:
            return []
        self.delivered += data
        frames: list[Frame] = []
        try:
            self._decoder.feed(data)
            while (frame := self._decoder.next_frame()) is not NEED_DATA:
                frames.append(frame)
        except PedError as exc:
            self.error = exc
        return frames

    def _alter(self, chunk: bytes) -> bytes:
        start = self._offset
        self._offset += len(chunk)
        if self.flip_at is not None and start <= self.flip_at < start + len(chunk):
            altered = bytearray(chunk)
            altered[self.flip_at - start] ^= 1 << self.flip_bit
            chunk = bytes(altered)
        if self.cut_at is not None:
            chunk = chunk[: max(0, self.cut_at - start)]
        return chunk


@attrs.define
class Outcome:
    to_ped: Wire
    to_hsm: Wire
    #: What the HSM accepted: ("read", secret) / ("imprint", keyset id), in order.
    hsm_accepted: list[tuple[str, bytes]] = attrs.field(factory=list)
    hsm_done: bool = False
    hsm_error: PedError | None = None
    #: What the PED served: ("read", colour, keyset) / ("imprint", colour, new secret).
    ped_served: list[tuple[object, ...]] = attrs.field(factory=list)
    ped_events: list[object] = attrs.field(factory=list)

    @property
    def ped_error(self) -> PedError | None:
        """Why the PED refused: its frame layer, or its session failing."""
        if self.to_ped.error is not None:
            return self.to_ped.error
        for event in self.ped_events:
            if isinstance(event, ev.SessionFailed):
                return event.error
        return None

    @property
    def ped_closed_cleanly(self) -> bool:
        return self.ped_error is None and any(
            isinstance(e, ev.SessionClosed) for e in self.ped_events
        )

    def texts(self) -> list[str]:
        """Every message and repr either end produced (to search for secrets)."""
        found: list[str] = []
        for item in (self.hsm_error, self.ped_error, self.to_ped.error, self.to_hsm.error):
            if item is not None:
                found += [str(item), repr(item)]
        found += [repr(e) for e in self.ped_events]
        return found


class _Run:
    def __init__(self, to_ped: Wire, to_hsm: Wire, *, cancel_read: bool = False) -> None:
        self.cancel_read = cancel_read
        self.hsm = HsmSideSession(rpv=RPV, hsm_serial=SERIAL, ephemeral_private=E_HSM)
        self.ped = PedSideSession(ped_info=PedInfo("pedemu", "E-1", "1.0"), ephemeral_private=E_PED)
        self.out = Outcome(to_ped, to_hsm)
        self.at_ped: list[Frame] = []
        self.at_hsm: list[Frame] = []
        self.hsm_stopped = False

    # HSM: the next step of its script after each answer.
    def hsm_send(self, frame: Frame | None) -> None:
        if frame is not None:
            self.at_ped += self.out.to_ped.carry(frame)

    def hsm_receive(self, frame: Frame) -> None:
        if self.hsm_stopped:
            return
        try:
            events = self.hsm.receive_frame(frame)
        except PedError as exc:
            self.out.hsm_error = exc
            self.hsm_stopped = True
            return
        for event in events:
            if isinstance(event, ev.ChannelReady):
                self.hsm_send(self.hsm.read_secret(Color.BLUE, keyset_id=KEYSET, label="SO"))
                if self.cancel_read:  # two frames in flight toward the PED
                    self.hsm_send(self.hsm.cancel())
            elif isinstance(event, ev.OperationSucceeded):
                result = event.result
                if isinstance(result, ReadResult):
                    self.out.hsm_accepted.append(("read", bytes(result.secret)))
                    self.hsm_send(self.hsm.imprint(Color.BLACK, new_secret=IMPRINT_SECRET))
                elif isinstance(result, ImprintResult):
                    self.out.hsm_accepted.append(("imprint", bytes(result.keyset_id)))
                    self.hsm_send(self.hsm.close())
                    self.out.hsm_done = True
                    self.hsm_stopped = True
            elif isinstance(event, ev.OperationFailed | ev.PedClosed):
                self.out.hsm_error = getattr(event, "error", None) or OperationTimeout(
                    "the PED closed the session"
                )
                self.hsm_stopped = True

    # PED: answers whatever it is asked, like an operator who always says yes.
    def ped_receive(self, frame: Frame) -> None:
        for event in self.ped.receive_frame(frame):
            self.out.ped_events.append(event)
            if isinstance(event, ev.RpvRequired):
                self.out.ped_events.append(self.ped.supply_rpv(RPV))
            elif isinstance(event, ev.ReadSecretRequested):
                self.out.ped_served.append(("read", event.color, event.keyset_id))
                self.ped.send_notice(NoticeKind.INSERT_KEY, 1, 1, "insert key")
                self.ped.answer_read_secret(READ_SECRET, keyset_id=KEYSET, m=1, n=1)
            elif isinstance(event, ev.ImprintRequested):
                secret = None if event.new_secret is None else bytes(event.new_secret)
                self.out.ped_served.append(("imprint", event.color, secret))
                self.ped.answer_imprint(keyset_id=NEW_KEYSET, m=1, n=1, pin=False, copies=1)
        for out in self.ped.frames_to_send():
            self.at_hsm += self.out.to_hsm.carry(out)

    def pump(self) -> bool:
        moved = False
        while self.at_ped or self.at_hsm:
            moved = True
            if self.at_ped:
                self.ped_receive(self.at_ped.pop(0))
            else:
                self.hsm_receive(self.at_hsm.pop(0))
        return moved

    def run(self) -> Outcome:
        self.hsm_send(self.hsm.start_handshake())
        while True:
            self.pump()
            released = False
            for wire, inbox in ((self.out.to_ped, self.at_ped), (self.out.to_hsm, self.at_hsm)):
                frames = wire.release()
                if frames is not None:
                    inbox += frames
                    released = True
            if not released:
                break
        # Nothing moves: the HSM gives up (or is done) and closes; the streams end.
        self.out.to_ped.end()
        if self.out.to_ped.error is None:
            self.out.ped_events += self.ped.receive_eof()
        self.out.to_hsm.end()
        if not self.hsm_stopped:
            self.out.hsm_error = self.out.to_hsm.error or OperationTimeout(
                "no answer from the PED before the operation timeout"
            )
        return self.out


def run_session(
    to_ped: Wire | None = None, to_hsm: Wire | None = None, *, cancel_read: bool = False
) -> Outcome:
    """Run the session; *cancel_read*: the HSM sends CANCEL right behind READ_SECRET (the
    PED has already answered when it arrives, so it is ignored as stale)."""
    return _Run(to_ped or Wire(), to_hsm or Wire(), cancel_read=cancel_read).run()


_GENUINE: dict[bool, Outcome] = {}


def genuine(*, cancel_read: bool = False) -> Outcome:
    """The unaltered session (computed once per variant)."""
    if cancel_read not in _GENUINE:
        _GENUINE[cancel_read] = run_session(cancel_read=cancel_read)
    return _GENUINE[cancel_read]


def is_prefix(part: list[object], whole: list[object]) -> bool:
    return part == whole[: len(part)]


def assert_nothing_forged(outcome: Outcome, *, cancel_read: bool = False) -> None:
    """The security property: only genuine requests served, only genuine answers taken."""
    reference = genuine(cancel_read=cancel_read)
    assert is_prefix(outcome.ped_served, reference.ped_served), outcome.ped_served  # type: ignore[arg-type]
    assert is_prefix(outcome.hsm_accepted, reference.hsm_accepted), outcome.hsm_accepted  # type: ignore[arg-type]
    for text in outcome.texts():
        for secret in SECRETS:
            assert secret.hex() not in text and repr(secret)[2:-1] not in text
    for stream in (outcome.to_ped.delivered, outcome.to_hsm.delivered):
        for secret in SECRETS:
            assert secret not in stream
