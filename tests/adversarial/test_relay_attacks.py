"""A relay between HSM and PED alters a recorded session every way it can (sans-IO).

Exhaustive and deterministic (see `transcript`): every bit of every byte flipped (in the
zero padding of a SEALED frame, one bit of every byte: `transcript.bits_to_flip`), the
stream cut at every byte, every frame dropped, duplicated and held back, in each
direction, over a session that carries secrets both ways (a read and an imprint).

``tests/ped/channel/test_over_streams.py`` runs the same kinds of attack through the
trio API with random ephemerals (one bit per byte, a read only); this file adds every
bit, both directions of truncation, the imprint direction, and checks the security
property itself (`assert_nothing_forged`): the PED serves only what the HSM really asked,
once; the HSM accepts only what the PED really answered; no secret reaches the wire or
any message.
"""

from __future__ import annotations

import pytest

from ped.errors import PedError, TruncatedFrame
from ped.ops import OperationTimeout

from .transcript import (
    Outcome,
    Wire,
    assert_nothing_forged,
    bits_to_flip,
    genuine,
    run_session,
)

DIRECTIONS = ["to_ped", "to_hsm"]


def _stream(direction: str, *, cancel_read: bool = False) -> list[bytes]:
    reference = genuine(cancel_read=cancel_read)
    wire = reference.to_ped if direction == "to_ped" else reference.to_hsm
    return wire.sent


def _run(direction: str, wire: Wire, *, cancel_read: bool = False) -> Outcome:
    if direction == "to_ped":
        return run_session(to_ped=wire, cancel_read=cancel_read)
    return run_session(to_hsm=wire, cancel_read=cancel_read)


def _receiver_error(direction: str, outcome: Outcome) -> PedError | None:
    return outcome.ped_error if direction == "to_ped" else outcome.hsm_error


def test_the_genuine_session_completes_and_no_secret_is_on_the_wire() -> None:
    for cancel_read in (False, True):
        outcome = genuine(cancel_read=cancel_read)
        assert outcome.hsm_done and outcome.hsm_error is None
        assert outcome.ped_closed_cleanly
        assert [kind for kind, *_ in outcome.ped_served] == ["read", "imprint"]
        assert [kind for kind, _ in outcome.hsm_accepted] == ["read", "imprint"]
        assert_nothing_forged(outcome, cancel_read=cancel_read)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_every_bit_of_every_byte_flipped_is_refused(direction: str) -> None:
    frames = _stream(direction)
    assert len(b"".join(frames)) > 200
    flipped = {position for position, _ in bits_to_flip(frames)}
    assert flipped == set(range(len(b"".join(frames))))  # every byte, at least one bit
    for position, bit in bits_to_flip(frames):
        outcome = _run(direction, Wire(flip_at=position, flip_bit=bit))
        where = f"{direction} byte {position} bit {bit}"
        error = _receiver_error(direction, outcome)
        assert isinstance(error, PedError), f"{where}: the receiver accepted it"
        assert not isinstance(error, OperationTimeout), f"{where}: only noticed by timeout"
        assert not (outcome.hsm_done and outcome.ped_closed_cleanly), where
        assert_nothing_forged(outcome)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_stream_cut_at_every_byte(direction: str) -> None:
    frames = _stream(direction)
    boundaries = {sum(len(f) for f in frames[:i]) for i in range(len(frames) + 1)}
    total = len(b"".join(frames))
    goodbye_start = total - len(frames[-1])
    for position in range(total):
        outcome = _run(direction, Wire(cut_at=position))
        assert_nothing_forged(outcome)
        if position not in boundaries:
            # Inside a frame: the receiver's frame layer refuses the unfinished frame.
            assert isinstance(_receiver_error(direction, outcome), TruncatedFrame), position
        elif direction == "to_ped" and position == goodbye_start:
            # Only the final GOODBYE is missing: the same as an HSM closing its stream,
            # which the protocol allows.  Everything was done and nothing extra served.
            assert outcome.hsm_done and outcome.ped_closed_cleanly
        else:
            # At a boundary the rest is simply missing: the HSM never completes.
            assert not outcome.hsm_done
            assert isinstance(outcome.hsm_error, PedError)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_every_frame_dropped(direction: str) -> None:
    frames = _stream(direction)
    for index in range(len(frames)):
        outcome = _run(direction, Wire(drop=index))
        assert_nothing_forged(outcome)
        if direction == "to_ped" and index == len(frames) - 1:
            assert outcome.hsm_done and outcome.ped_closed_cleanly  # a dropped GOODBYE = close
            continue
        assert not outcome.hsm_done, index
        assert isinstance(outcome.hsm_error, PedError), index


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_every_frame_duplicated(direction: str) -> None:
    frames = _stream(direction)
    for index in range(len(frames)):
        outcome = _run(direction, Wire(duplicate=index))
        assert_nothing_forged(outcome)  # in particular: nothing served or accepted twice
        if index == len(frames) - 1:
            # The copy of the last frame arrives after that end has finished: ignored.
            assert outcome.hsm_done
            continue
        error = _receiver_error(direction, outcome)
        assert isinstance(error, PedError) and not isinstance(error, OperationTimeout), index


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("cancel_read", [False, True])
def test_every_frame_reordered(direction: str, cancel_read: bool) -> None:
    frames = _stream(direction, cancel_read=cancel_read)
    swaps = 0
    for index in range(len(frames)):
        wire = Wire(hold=index)
        outcome = _run(direction, wire, cancel_read=cancel_read)
        assert_nothing_forged(outcome, cancel_read=cancel_read)
        if wire.swapped:
            swaps += 1
            error = _receiver_error(direction, outcome)
            assert isinstance(error, PedError) and not isinstance(error, OperationTimeout)
        else:
            # Nothing overtook it: a delay, which must change nothing.
            assert outcome.hsm_done and outcome.ped_closed_cleanly
    if direction == "to_hsm" or cancel_read:
        assert swaps >= 1  # some frames really were in flight together
