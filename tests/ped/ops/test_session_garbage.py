"""Garbage into the sessions, in every state: only typed outcomes, never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys.colors import Color
from ped.errors import PedError
from ped.ops import HsmSideSession, PedSideSession, PedState
from ped.ops import events as ev
from ped.wire.framing import Frame

from .helpers import KEYSET, RPV, SECRET, connected, make_pair

SETTINGS = settings(max_examples=150, deadline=None)

frames = st.builds(Frame, st.integers(0x20, 0x23), st.binary(max_size=160))


def ped_in_state(state: str) -> tuple[HsmSideSession, PedSideSession]:
    if state == "await-init":
        return make_pair()
    if state == "await-rpv":
        hsm, ped = make_pair()
        ped.receive_frame(hsm.start_handshake())
        return hsm, ped
    hsm, ped = connected()
    if state == "in-operation":
        ped.receive_frame(hsm.read_secret(Color.BLUE))
    return hsm, ped


@SETTINGS
@given(st.sampled_from(["await-init", "await-rpv", "ready", "in-operation"]), frames)
def test_ped_session_turns_garbage_into_session_failed(state: str, frame: Frame) -> None:
    _, ped = ped_in_state(state)
    events = ped.receive_frame(frame)
    assert all(isinstance(e, ev.SessionFailed | ev.RpvRequired) for e in events)
    if any(isinstance(e, ev.SessionFailed) for e in events):
        assert ped.state is PedState.FAILED
        assert all(f.type == 0x22 for f in ped.frames_to_send())  # at most a clear refusal


@SETTINGS
@given(st.sampled_from(["handshaking", "awaiting"]), frames)
def test_hsm_session_raises_only_typed_errors(state: str, frame: Frame) -> None:
    if state == "handshaking":
        hsm, _ = make_pair()
        hsm.start_handshake()
    else:
        hsm, ped = connected()
        ped.receive_frame(hsm.read_secret(Color.BLUE))
    try:
        events = hsm.receive_frame(frame)
    except PedError:
        return
    pytest.fail(f"garbage was accepted: {events!r}")


@SETTINGS
@given(st.data())
def test_mutated_genuine_answers_are_refused(data: st.DataObject) -> None:
    hsm, ped = connected()
    ped.receive_frame(hsm.read_secret(Color.BLUE, keyset_id=KEYSET))
    ped.answer_read_secret(SECRET, keyset_id=KEYSET)
    (frame,) = ped.frames_to_send()
    payload = bytearray(frame.payload)
    position = data.draw(st.integers(0, len(payload) - 1))
    payload[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(PedError):
        hsm.receive_frame(Frame(frame.type, bytes(payload)))


def test_rpv_is_not_kept_by_the_sessions() -> None:
    hsm, ped = make_pair()
    ped.receive_frame(hsm.start_handshake())
    ped.supply_rpv(RPV)
    for obj in (hsm, ped, hsm._initiator, ped._responder):
        if obj is None:
            continue
        for value in vars(obj).values():
            assert value != RPV and value != bytearray(RPV)
