"""An HSM (or whoever is on the path) asks the PED for an operation outside a channel.

Operation requests exist only inside a SEALED frame of an established channel.  Here a
rogue HSM tries every other way: plaintext operation frames, genuine sealed requests
(well-formed and authentic for *another* channel) before any handshake, while the PED
waits for the orange key, after a refused handshake, after the session ended.  The PED
must serve nothing, release nothing, and answer at most a clear HANDSHAKE_REFUSED.
``tests/ped/ops/test_session_garbage.py`` sends random frames; these are the well-formed
ones an attacker would actually try.
"""

from __future__ import annotations

import pytest
import trio

from keys.colors import Color
from ped.channel import RefuseReason
from ped.errors import LocalProtocolError, PedError, RemoteProtocolError, UnknownFrameType
from ped.ops import HsmSideSession, PedSideSession, PedState
from ped.ops import events as ev
from ped.ops.messages import Cancel, ImprintRequest, ReadSecret, ShowMessage
from ped.wire.framing import Frame, decode_frame
from ped.wire.types import E2EType, OpType

from ..ped.ops.helpers import OTHER_RPV, RPV, SECRET, connected, deliver, make_pair
from ..ped.ops.memory import TinyPed, answer_secret, transport_pair

PLAIN_REQUESTS = [
    ReadSecret(1, Color.BLUE, None, "HSM SO"),
    ImprintRequest(1, Color.ORANGE, SECRET),
    ShowMessage(1, "hello"),
    Cancel(1),
]
SERVED = (ev.ReadSecretRequested, ev.ImprintRequested, ev.ShowRequested, ev.CancelRequested)


def _sealed_requests_of_another_channel() -> list[Frame]:
    """Genuine sealed requests, authentic under a channel the target PED never joined."""
    hsm, ped = connected()
    frames = [hsm.read_secret(Color.BLUE, label="SO")]
    ped.receive_frame(frames[0])
    ped.answer_read_secret(SECRET, keyset_id=bytes(16))
    deliver(hsm, ped.frames_to_send())
    frames.append(hsm.imprint(Color.BLACK, new_secret=SECRET))
    return frames


def _ped_in(state: str) -> PedSideSession:
    hsm, ped = make_pair()
    if state == "await-init":
        return ped
    ped.receive_frame(hsm.start_handshake())
    if state == "await-rpv":
        return ped
    if state == "rpv-refused":
        ped.supply_rpv(OTHER_RPV)
    elif state == "operator-refused":
        ped.refuse(RefuseReason.CANCELLED, "operator said no")
    elif state == "after-goodbye":
        ped.supply_rpv(RPV)
        deliver(hsm, ped.frames_to_send())
        goodbye = hsm.close()
        assert goodbye is not None
        ped.receive_frame(goodbye)
    ped.frames_to_send()
    return ped


def _check_nothing_served(ped: PedSideSession, events: list[object]) -> None:
    assert not any(isinstance(e, SERVED) for e in events)
    assert ped.current is None
    out = ped.frames_to_send()
    assert all(f.type == E2EType.HANDSHAKE_REFUSED for f in out)  # never a sealed answer


@pytest.mark.parametrize("request_", PLAIN_REQUESTS, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("state", ["await-init", "await-rpv"])
def test_plaintext_operation_frame_is_refused(request_: object, state: str) -> None:
    ped = _ped_in(state)
    frame = decode_frame(request_.encode())  # type: ignore[attr-defined]
    assert frame.type in set(OpType)
    events = ped.receive_frame(frame)
    assert len(events) == 1 and isinstance(events[0], ev.SessionFailed)
    assert isinstance(events[0].error, RemoteProtocolError)
    _check_nothing_served(ped, events)
    assert ped.state is PedState.FAILED


@pytest.mark.parametrize("state", ["await-init", "await-rpv"])
def test_sealed_request_before_the_channel_is_refused(state: str) -> None:
    for sealed in _sealed_requests_of_another_channel():
        ped = _ped_in(state)
        events = ped.receive_frame(sealed)
        assert len(events) == 1 and isinstance(events[0], ev.SessionFailed), state
        assert isinstance(events[0].error, RemoteProtocolError)
        _check_nothing_served(ped, events)
        if state == "await-rpv":
            # The session is over: presenting the orange key now opens nothing.
            assert isinstance(ped.supply_rpv(RPV), ev.SessionFailed)
            assert ped.frames_to_send() == [] and ped.state is PedState.FAILED


@pytest.mark.parametrize("state", ["rpv-refused", "operator-refused", "after-goodbye"])
def test_sealed_request_after_the_session_ended_is_ignored(state: str) -> None:
    ped = _ped_in(state)
    for sealed in _sealed_requests_of_another_channel():
        events = ped.receive_frame(sealed)
        assert events == []
        _check_nothing_served(ped, events)
    assert not ped.is_open


def test_hsm_session_without_a_handshake_accepts_nothing() -> None:
    hsm = HsmSideSession(rpv=RPV, hsm_serial="150001")
    with pytest.raises(LocalProtocolError):
        hsm.read_secret(Color.BLUE)  # no channel: the HSM cannot even ask
    with pytest.raises(LocalProtocolError):
        hsm.receive_frame(Frame(E2EType.SEALED, bytes(64)))
    hsm, _ = make_pair()
    hsm.start_handshake()
    answer = _sealed_requests_of_another_channel()[0]
    with pytest.raises(UnknownFrameType):
        hsm.receive_frame(answer)  # a sealed frame where the handshake answer belongs


@pytest.mark.parametrize("plain", [True, False], ids=["plaintext-op", "sealed-op"])
async def test_rogue_hsm_over_a_transport_gets_nothing(plain: bool, autojump_clock: object) -> None:
    """Over a real (memory) transport to a PED that would answer any read with a secret."""
    relay_t, ped_t = transport_pair()
    ped = TinyPed(RPV, {ev.ReadSecretRequested: answer_secret})
    replies: list[Frame] = []

    async def collect() -> None:
        try:
            while True:
                replies.append(await relay_t.receive())
        except PedError:
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        nursery.start_soon(collect)
        if plain:
            for request in PLAIN_REQUESTS:
                await relay_t.send(decode_frame(request.encode()))
        else:
            for frame in _sealed_requests_of_another_channel():
                await relay_t.send(frame)
        await trio.sleep(5)
        await relay_t.aclose()
    assert not any(isinstance(e, SERVED) for e in ped.events)
    if plain:
        # The PED's frame layer does not even accept operation types on its transport.
        assert isinstance(ped.transport_error, UnknownFrameType)
    else:
        assert any(isinstance(e, ev.SessionFailed) for e in ped.events)
    assert all(f.type == E2EType.HANDSHAKE_REFUSED for f in replies)
    assert all(SECRET not in f.payload and bytes([7]) * 32 not in f.payload for f in replies)
