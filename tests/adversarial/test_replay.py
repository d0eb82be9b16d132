"""A relay records a whole genuine session and replays it later, to the PED and to the HSM.

The recording is real: `ped.hsm_api` against the tiny PED of ``tests/ped/ops/memory.py``
over in-memory transports, random ephemeral keys as in production, one read and one
imprint (so secrets travel both ways).  Each `MemoryFrameTransport` keeps the bytes it
sent, which is exactly what a relay in the middle would have recorded.

Why it fails: Noise NNpsk0 mixes both sides' fresh ephemeral keys into every transport
key.  Replayed to a PED, the recorded HANDSHAKE_INIT still authenticates (message 1 of
NNpsk0 is replayable by design: the PED may prompt for the orange key), but the PED
answers with a new ephemeral, so the recorded sealed requests no longer decrypt.
Replayed to an HSM, the recorded HANDSHAKE_RESPONSE answers another ephemeral: it does
not authenticate, which the HSM reports as `RpvMismatch`.
"""

from __future__ import annotations

import attrs
import pytest
import trio

from keys.colors import Color
from ped.channel import DecryptFailed, RpvMismatch
from ped.errors import PedError
from ped.hsm_api import open_ped_session
from ped.ops import events as ev
from ped.wire.framing import Frame, decode_frame
from ped.wire.types import E2EType

from ..ped.ops.helpers import connected
from ..ped.ops.memory import (
    TinyPed,
    answer_imprint,
    answer_secret,
    transport_pair,
)

RPV = bytes(range(32))
SERIAL = "150001"
NEW_SECRET = bytes([0x3C]) * 32
READ_BACK = bytes([7]) * 32  # what answer_secret reads


@attrs.frozen
class Recording:
    to_ped: list[bytes]  # frames the HSM sent, in order
    to_hsm: list[bytes]  # frames the PED sent, in order


def _ped() -> TinyPed:
    script = {ev.ReadSecretRequested: answer_secret, ev.ImprintRequested: answer_imprint}
    return TinyPed(RPV, script)


async def record_session() -> Recording:
    hsm_t, ped_t = transport_pair()
    ped = _ped()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        async with open_ped_session(hsm_t, rpv=RPV, hsm_serial=SERIAL) as session:
            assert bytes((await session.read_secret(Color.BLUE)).secret) == READ_BACK
            await session.imprint(Color.BLACK, new_secret=NEW_SECRET, label="CO")
        await hsm_t.aclose()
    served = [type(e).__name__ for e in ped.events]
    assert "ReadSecretRequested" in served and "ImprintRequested" in served
    return Recording(list(hsm_t.sent), list(ped_t.sent))


async def _replay_to_ped(recording: Recording) -> tuple[TinyPed, list[Frame]]:
    """Send the recorded HSM frames to a fresh PED whose operator presents the right key."""
    relay_t, ped_t = transport_pair()
    ped = _ped()
    answers: list[Frame] = []

    async def collect() -> None:
        try:
            while True:
                answers.append(await relay_t.receive())
        except PedError:
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        nursery.start_soon(collect)
        for data in recording.to_ped:
            await relay_t.send(decode_frame(data))
            await trio.sleep(1)  # "later": let the PED act on each frame
        await relay_t.aclose()
    return ped, answers


async def test_whole_session_replayed_to_the_ped_serves_nothing(autojump_clock: object) -> None:
    recording = await record_session()
    ped, answers = await _replay_to_ped(recording)
    kinds = [type(e) for e in ped.events]
    assert ev.ReadSecretRequested not in kinds and ev.ImprintRequested not in kinds
    failures = [e for e in ped.events if isinstance(e, ev.SessionFailed)]
    assert len(failures) == 1 and isinstance(failures[0].error, DecryptFailed)
    # The PED answered the replayed handshake with a fresh ephemeral key, and nothing else.
    assert [f.type for f in answers] == [E2EType.HANDSHAKE_RESPONSE]
    assert answers[0].payload != decode_frame(recording.to_hsm[0]).payload


async def test_whole_session_replayed_to_the_hsm_is_rpv_mismatch(autojump_clock: object) -> None:
    recording = await record_session()
    hsm_t, relay_t = transport_pair()
    seen: list[Frame] = []

    async def replaying_ped() -> None:
        seen.append(await relay_t.receive())  # the HSM's new HANDSHAKE_INIT
        for data in recording.to_hsm:
            await relay_t.send(decode_frame(data))

    results: list[object] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(replaying_ped)
        with pytest.raises(RpvMismatch):
            async with open_ped_session(hsm_t, rpv=RPV, hsm_serial=SERIAL) as session:
                results.append(await session.read_secret(Color.BLUE))
        nursery.cancel_scope.cancel()
    assert results == []  # no secret came out
    assert seen[0].payload != decode_frame(recording.to_ped[0]).payload  # a fresh ephemeral


async def test_two_recordings_share_no_frame(autojump_clock: object) -> None:
    first, second = await record_session(), await record_session()
    assert not set(first.to_ped) & set(second.to_ped)
    assert not set(first.to_hsm) & set(second.to_hsm)


def test_frames_spliced_between_two_live_sessions_with_one_rpv_are_refused() -> None:
    """Several HSMs may share one RPV: a frame of one channel is refused on another."""
    hsm_a, _ = connected()
    _, ped_b = connected()
    events = ped_b.receive_frame(hsm_a.read_secret(Color.BLUE, label="SO"))
    assert len(events) == 1 and isinstance(events[0], ev.SessionFailed)
    assert isinstance(events[0].error, DecryptFailed)
    assert ped_b.current is None  # nothing is being served

    hsm_c, ped_c = connected()
    ped_c.receive_frame(hsm_c.read_secret(Color.BLUE))
    ped_c.answer_read_secret(READ_BACK, keyset_id=bytes(16))
    (answer,) = ped_c.frames_to_send()
    hsm_d, _ = connected()
    hsm_d.read_secret(Color.BLUE)
    with pytest.raises(DecryptFailed):
        hsm_d.receive_frame(answer)
