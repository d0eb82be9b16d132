"""The whole stack over trio memory streams with a hostile relay in the middle.

HSM (`ped.hsm_api`) <-> relay <-> tiny PED (`PedSideSession`).  The relay records a
genuine session, then: flips one byte at every position of it, in each direction (in the
zero padding of a SEALED frame, where every byte is alike to the AEAD, every 16th);
replays, reorders and drops frames; cuts the stream; replays a whole recorded session
to a fresh PED and a fresh HSM.  Every attack must end in a typed error on the side that
received the altered bytes, and the HSM must never return anything but the genuine
secret.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
import trio
import trio.testing

from keys.colors import Color
from ped.channel import DecryptFailed, RpvMismatch
from ped.errors import PedError
from ped.hsm_api import open_ped_session
from ped.ops import PedSideSession
from ped.ops import events as ev
from ped.ops.hsm_side import HsmSideSession
from ped.wire.framing import NEED_DATA, Frame, FrameDecoder, decode_frame, encode_frame
from ped.wire.types import E2EType

from ..ops.memory import MemoryFrameTransport, TinyPed, answer_secret

RPV = bytes(range(32))
KEYSET = bytes([3]) * 16
GENUINE = bytes([7]) * 32  # what answer_secret reads

ByteMutation = Callable[[int, bytes], bytes]  # (offset of chunk, chunk) -> chunk
FrameMutation = Callable[[list[bytes]], list[bytes]]  # frames so far -> frames to send now


@attrs.define
class Outcome:
    hsm: bytes | PedError | None = None
    ped_events: list[object] = attrs.field(factory=list)
    ped_error: PedError | None = None
    to_ped: bytes = b""
    to_hsm: bytes = b""

    @property
    def ped_detected(self) -> bool:
        return self.ped_error is not None or any(
            isinstance(e, ev.SessionFailed) for e in self.ped_events
        )


async def _pump(
    src: trio.abc.Stream,
    dst: trio.abc.Stream,
    record: list[bytes],
    byte_mutation: ByteMutation | None,
    frame_mutation: FrameMutation | None,
) -> None:
    offset = 0
    decoder = FrameDecoder(max_payload=1 << 20)
    seen: list[bytes] = []
    try:
        while data := await src.receive_some(4096):
            record.append(data)
            if frame_mutation is not None:
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not NEED_DATA:
                    seen.append(encode_frame(frame))
                    for out in frame_mutation(seen):
                        await dst.send_all(out)
                continue
            if byte_mutation is not None:
                data = byte_mutation(offset, data)
            offset += len(data)
            if data:
                await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    await dst.aclose()


async def run_session(
    *,
    to_ped: ByteMutation | None = None,
    to_hsm: ByteMutation | None = None,
    to_ped_frames: FrameMutation | None = None,
    to_hsm_frames: FrameMutation | None = None,
    ped_rpv: bytes = RPV,
) -> Outcome:
    outcome = Outcome()
    hsm_stream, relay_h = trio.testing.memory_stream_pair()
    relay_p, ped_stream = trio.testing.memory_stream_pair()
    hsm_t, ped_t = MemoryFrameTransport(hsm_stream), MemoryFrameTransport(ped_stream)
    ped = TinyPed(ped_rpv, {ev.ReadSecretRequested: answer_secret}, events=outcome.ped_events)
    rec_p: list[bytes] = []
    rec_h: list[bytes] = []

    async def run_ped() -> None:
        await ped.run(ped_t)
        outcome.ped_error = ped.transport_error  # the frame layer refused the bytes

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_pump, relay_h, relay_p, rec_p, to_ped, to_ped_frames)
        nursery.start_soon(_pump, relay_p, relay_h, rec_h, to_hsm, to_hsm_frames)
        nursery.start_soon(run_ped)
        try:
            async with open_ped_session(
                hsm_t, rpv=RPV, hsm_serial="150001", op_timeout=60, cancel_grace=5
            ) as session:
                result = await session.read_secret(Color.BLUE, KEYSET)
                outcome.hsm = bytes(result.secret)
        except PedError as exc:
            outcome.hsm = exc
        await hsm_t.aclose()
        with trio.move_on_after(30):
            while ped.session.is_open and outcome.ped_error is None:
                await trio.sleep(1)
        nursery.cancel_scope.cancel()
    outcome.to_ped, outcome.to_hsm = b"".join(rec_p), b"".join(rec_h)
    return outcome


def flip_at(position: int) -> ByteMutation:
    def mutate(offset: int, chunk: bytes) -> bytes:
        if offset <= position < offset + len(chunk):
            data = bytearray(chunk)
            data[position - offset] ^= 0x01
            return bytes(data)
        return chunk

    return mutate


def positions_to_flip(stream: bytes) -> list[int]:
    """Every offset of *stream*, except in the padding of a SEALED frame: every 16th.

    Past its first 128 bytes (the ciphertext of suite 2's length field and of any message
    of this session) and before its tag, a SEALED payload is encrypted zero padding.
    """
    positions: list[int] = []
    offset = 0
    while offset + 8 <= len(stream):
        size = 8 + int.from_bytes(stream[offset + 4 : offset + 8], "big")
        sealed = stream[offset + 3] == E2EType.SEALED
        for index in range(size):
            padding = sealed and 8 + 128 <= index < size - 16
            if not padding or index % 16 == 0:
                positions.append(offset + index)
        offset += size
    assert offset == len(stream)
    return positions


def cut_at(position: int) -> ByteMutation:
    def mutate(offset: int, chunk: bytes) -> bytes:
        return chunk[: max(0, position - offset)]

    return mutate


async def test_genuine_session(autojump_clock: object) -> None:
    outcome = await run_session()
    assert outcome.hsm == GENUINE
    assert not outcome.ped_detected
    assert isinstance(outcome.ped_events[-1], ev.SessionClosed)


async def test_wrong_rpv_over_streams(autojump_clock: object) -> None:
    outcome = await run_session(ped_rpv=bytes(32))
    assert isinstance(outcome.hsm, RpvMismatch)
    assert any(
        isinstance(e, ev.SessionFailed) and isinstance(e.error, RpvMismatch)
        for e in outcome.ped_events
    )


async def test_tampered_byte_at_every_position(autojump_clock: object) -> None:
    genuine = await run_session()
    assert len(genuine.to_ped) > 100 and len(genuine.to_hsm) > 100
    for position in positions_to_flip(genuine.to_ped):
        outcome = await run_session(to_ped=flip_at(position))
        assert outcome.ped_detected, f"PED accepted a flipped byte at HSM->PED {position}"
        assert outcome.hsm == GENUINE or isinstance(outcome.hsm, PedError)
    for position in positions_to_flip(genuine.to_hsm):
        outcome = await run_session(to_hsm=flip_at(position))
        assert isinstance(outcome.hsm, PedError), f"HSM accepted PED->HSM byte {position}"


async def test_truncated_stream_at_every_frame_boundary_and_inside(
    autojump_clock: object,
) -> None:
    genuine = await run_session()
    for position in range(0, len(genuine.to_hsm), 7):
        outcome = await run_session(to_hsm=cut_at(position))
        assert isinstance(outcome.hsm, PedError)


@pytest.mark.parametrize("attack", ["replay", "reorder", "drop"])
async def test_frame_attacks_toward_the_hsm(attack: str, autojump_clock: object) -> None:
    # PED->HSM frames: RESPONSE, NOTICE, READ_RESULT.
    def mutate(seen: list[bytes]) -> list[bytes]:
        index = len(seen) - 1
        if attack == "replay":
            return [seen[-1], seen[-1]] if index == 1 else [seen[-1]]
        if attack == "reorder":
            return [] if index == 1 else ([seen[-1], seen[1]] if index == 2 else [seen[-1]])
        return [] if index == 1 else [seen[-1]]

    outcome = await run_session(to_hsm_frames=mutate)
    assert isinstance(outcome.hsm, DecryptFailed)


async def test_replayed_request_toward_the_ped(autojump_clock: object) -> None:
    def mutate(seen: list[bytes]) -> list[bytes]:
        return [seen[-1], seen[-1]] if len(seen) == 2 else [seen[-1]]

    outcome = await run_session(to_ped_frames=mutate)
    assert outcome.hsm == GENUINE  # the genuine request was answered once...
    failures = [e for e in outcome.ped_events if isinstance(e, ev.SessionFailed)]
    assert failures and isinstance(failures[0].error, DecryptFailed)  # ...the replay refused


async def test_whole_recorded_session_replayed(autojump_clock: object) -> None:
    genuine = await run_session()
    # To a fresh PED: it may prompt for the orange key, but the old requests are dead.
    ped = PedSideSession()
    decoder = FrameDecoder()
    decoder.feed(genuine.to_ped)
    events: list[object] = []
    while (frame := decoder.next_frame()) is not NEED_DATA:
        for event in ped.receive_frame(frame):
            events.append(event)
            if isinstance(event, ev.RpvRequired):
                events.append(ped.supply_rpv(RPV))
    assert isinstance(events[-1], ev.SessionFailed)
    assert not any(isinstance(e, ev.ReadSecretRequested) for e in events)
    # To a fresh HSM: the recorded answer belongs to another ephemeral key.
    hsm = HsmSideSession(rpv=RPV, hsm_serial="150001")
    hsm.start_handshake()
    decoder = FrameDecoder()
    decoder.feed(genuine.to_hsm)
    first = decoder.next_frame()
    assert isinstance(first, Frame)
    with pytest.raises(RpvMismatch):
        hsm.receive_frame(decode_frame(encode_frame(first)))
