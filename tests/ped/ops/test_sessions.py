"""Every transition of HsmSideSession and PedSideSession."""

from __future__ import annotations

import pytest

from keys.colors import Color
from ped.channel import PedInfo, RefuseReason, RpvMismatch
from ped.errors import LocalProtocolError, RemoteProtocolError
from ped.ops import (
    ErrorCode,
    HsmSideState,
    KeysetMismatch,
    KeyTimeout,
    NoBlankKey,
    OperationCancelled,
    PedState,
    Unsupported,
    WrongColor,
)
from ped.ops import events as ev
from ped.ops.messages import CloseReason, NoticeKind, ReadResult, ShowDone
from ped.transport import PedBusy

from .helpers import KEYSET, OTHER_RPV, RPV, SECRET, SERIAL, connected, deliver, make_pair


def test_handshake_events_and_states() -> None:
    hsm, ped = make_pair()
    assert hsm.state is HsmSideState.IDLE and ped.state is PedState.AWAIT_INIT
    events = ped.receive_frame(hsm.start_handshake())
    assert events == [ev.RpvRequired(SERIAL, 200.0)]
    assert hsm.state is HsmSideState.HANDSHAKING and ped.state is PedState.AWAIT_RPV
    assert ped.supply_rpv(RPV) == ev.ChannelEstablished(SERIAL)
    assert ped.state is PedState.READY
    assert deliver(hsm, ped.frames_to_send()) == [ev.ChannelReady(PedInfo("pedemu", "E-1", "1.0"))]
    assert hsm.state is HsmSideState.READY
    assert hsm.ped_info == PedInfo("pedemu", "E-1", "1.0")


def test_wrong_rpv_fails_both_ends() -> None:
    hsm, ped = make_pair()
    ped.receive_frame(hsm.start_handshake())
    result = ped.supply_rpv(OTHER_RPV)
    assert isinstance(result, ev.SessionFailed) and isinstance(result.error, RpvMismatch)
    assert ped.state is PedState.FAILED
    frames = ped.frames_to_send()
    with pytest.raises(RpvMismatch):
        deliver(hsm, frames)
    assert hsm.state is HsmSideState.FAILED


@pytest.mark.parametrize(
    ("reason", "error"),
    [
        (RefuseReason.CANCELLED, OperationCancelled),
        (RefuseReason.KEY_TIMEOUT, KeyTimeout),
        (RefuseReason.BUSY, PedBusy),
    ],
)
def test_refusals_map_to_typed_errors(reason: RefuseReason, error: type[Exception]) -> None:
    hsm, ped = make_pair()
    ped.receive_frame(hsm.start_handshake())
    ped.refuse(reason, "operator said no")
    assert ped.state is PedState.CLOSED
    with pytest.raises(error):
        deliver(hsm, ped.frames_to_send())


def test_read_secret_round_trip() -> None:
    hsm, ped = connected()
    events = ped.receive_frame(hsm.read_secret(Color.BLACK, keyset_id=KEYSET, label="CO"))
    assert events == [ev.ReadSecretRequested(1, Color.BLACK, KEYSET, "CO", 200.0)]
    ped.send_notice(NoticeKind.INSERT_KEY, 1, 2, "insert black key")
    ped.answer_read_secret(SECRET, keyset_id=KEYSET, m=2, n=3)
    events = deliver(hsm, ped.frames_to_send())
    assert isinstance(events[0], ev.ProgressNotice) and events[0].notice.step == 1
    done = events[1]
    assert isinstance(done, ev.OperationSucceeded) and isinstance(done.result, ReadResult)
    assert done.result.secret == bytearray(SECRET)
    assert (done.result.m, done.result.n, done.result.keyset_id) == (2, 3, KEYSET)
    assert hsm.state is HsmSideState.READY and ped.state is PedState.READY


def test_imprint_new_and_reused() -> None:
    hsm, ped = connected()
    (req,) = ped.receive_frame(hsm.imprint(Color.BLUE, new_secret=SECRET, label="SO"))
    assert isinstance(req, ev.ImprintRequested) and req.new_secret == bytearray(SECRET)
    with pytest.raises(LocalProtocolError):  # a PIN changes the login secret: must say it
        ped.answer_imprint(keyset_id=KEYSET, m=1, n=1, pin=True, copies=2)
    with pytest.raises(LocalProtocolError):  # reuse was not allowed
        ped.answer_imprint(keyset_id=KEYSET, m=1, n=1, pin=False, copies=2, reused_secret=SECRET)
    ped.answer_imprint(keyset_id=KEYSET, m=1, n=1, pin=True, copies=2, secret=bytes(32))
    assert req.new_secret == bytearray(32)  # wiped once answered
    (done,) = deliver(hsm, ped.frames_to_send())
    assert isinstance(done, ev.OperationSucceeded)
    assert done.result.copies == 2 and done.result.pin and not done.result.reused
    assert done.result.secret == bytearray(32)

    ped.receive_frame(hsm.imprint(Color.BLUE, new_secret=SECRET))
    ped.answer_imprint(keyset_id=KEYSET, m=1, n=1, pin=False, copies=1)
    (done,) = deliver(hsm, ped.frames_to_send())
    assert done.result.secret is None and not done.result.reused

    (req,) = ped.receive_frame(hsm.imprint(Color.ORANGE, allow_reuse=True))
    assert isinstance(req, ev.ImprintRequested) and req.new_secret is None
    with pytest.raises(LocalProtocolError):
        ped.answer_imprint(keyset_id=KEYSET, m=1, n=1, pin=False, copies=1)
    ped.answer_imprint(keyset_id=KEYSET, m=1, n=1, pin=False, copies=0, reused_secret=SECRET)
    (done,) = deliver(hsm, ped.frames_to_send())
    assert done.result.reused and done.result.secret == bytearray(SECRET)


def test_show_message() -> None:
    hsm, ped = connected()
    assert ped.receive_frame(hsm.show_message("Hello")) == [ev.ShowRequested(1, "Hello")]
    ped.answer_show()
    (done,) = deliver(hsm, ped.frames_to_send())
    assert done == ev.OperationSucceeded(1, ShowDone(1))


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (ErrorCode.WRONG_COLOR, WrongColor),
        (ErrorCode.KEYSET_MISMATCH, KeysetMismatch),
        (ErrorCode.KEY_TIMEOUT, KeyTimeout),
        (ErrorCode.NO_BLANK_KEY, NoBlankKey),
        (ErrorCode.BUSY, PedBusy),
    ],
)
def test_operation_errors(code: ErrorCode, error: type[Exception]) -> None:
    hsm, ped = connected()
    ped.receive_frame(hsm.read_secret(Color.BLUE))
    ped.answer_error(code, "detail")
    (failed,) = deliver(hsm, ped.frames_to_send())
    assert isinstance(failed, ev.OperationFailed) and isinstance(failed.error, error)
    assert hsm.state is HsmSideState.READY


def test_cancel_flow_and_stale_cancel() -> None:
    hsm, ped = connected()
    ped.receive_frame(hsm.read_secret(Color.BLUE))
    cancel = hsm.cancel()
    assert cancel is not None and hsm.cancel() is None  # sent once
    assert ped.receive_frame(cancel) == [ev.CancelRequested(1)]
    assert ped.cancel_requested
    ped.answer_error(ErrorCode.CANCELLED)
    (failed,) = deliver(hsm, ped.frames_to_send())
    assert isinstance(failed.error, OperationCancelled)
    assert hsm.cancel() is None  # nothing outstanding


def test_concurrent_request_is_answered_busy_by_the_session() -> None:
    hsm, ped = connected()
    ped.receive_frame(hsm.read_secret(Color.BLUE))
    # A misbehaving HSM sends a second request; emulate with a second HSM-side seal.
    hsm.state = HsmSideState.READY  # force the local machine to allow it
    assert ped.receive_frame(hsm.show_message("x")) == []
    assert ped.state is PedState.IN_OPERATION and ped.current is not None
    assert ped.current.op_id == 1


def test_local_misuse_raises() -> None:
    hsm, ped = connected()
    with pytest.raises(LocalProtocolError):
        ped.answer_show()
    ped.receive_frame(hsm.read_secret(Color.BLUE))
    with pytest.raises(LocalProtocolError):
        hsm.read_secret(Color.BLUE)
    with pytest.raises(LocalProtocolError):
        ped.answer_show()
    with pytest.raises(LocalProtocolError):
        ped.supply_rpv(RPV)


def test_goodbye_both_ways() -> None:
    hsm, ped = connected()
    ped.close(CloseReason.SHUTDOWN, "bye")
    (closed,) = deliver(hsm, ped.frames_to_send())
    assert closed == ev.PedClosed(CloseReason.SHUTDOWN, "bye")
    assert hsm.state is HsmSideState.CLOSED

    hsm, ped = connected()
    frame = hsm.close()
    assert frame is not None
    assert ped.receive_frame(frame) == [ev.SessionClosed(CloseReason.NORMAL, "")]
    assert ped.receive_frame(frame) == []  # closed: ignored


def test_eof_closes_ped_session() -> None:
    hsm, ped = connected()
    ped.receive_frame(hsm.read_secret(Color.BLUE))
    (closed,) = ped.receive_eof()
    assert isinstance(closed, ev.SessionClosed) and ped.state is PedState.CLOSED


def test_garbage_fails_ped_session_and_raises_on_hsm() -> None:
    hsm, ped = connected()
    frame = hsm.read_secret(Color.BLUE)
    bad = type(frame)(frame.type, frame.payload[:-1] + bytes([frame.payload[-1] ^ 1]))
    (failed,) = ped.receive_frame(bad)
    assert isinstance(failed, ev.SessionFailed)
    assert isinstance(failed.error, RemoteProtocolError)
    assert ped.state is PedState.FAILED

    hsm, ped = connected()
    ped.receive_frame(hsm.read_secret(Color.BLUE))
    ped.answer_read_secret(SECRET, keyset_id=KEYSET)
    (good,) = ped.frames_to_send()
    with pytest.raises(RemoteProtocolError):
        hsm.receive_frame(type(good)(good.type, good.payload[1:]))
    assert hsm.state is HsmSideState.FAILED


def test_hsm_gone_while_the_orange_key_is_read() -> None:
    hsm, ped = make_pair()
    ped.receive_frame(hsm.start_handshake())
    (closed,) = ped.receive_eof()
    assert isinstance(closed, ev.SessionClosed)
    late = ped.supply_rpv(RPV)
    assert isinstance(late, ev.SessionFailed)
    ped.refuse(RefuseReason.KEY_TIMEOUT)  # no-op
    assert ped.frames_to_send() == []


def test_malformed_init_is_refused_in_the_clear() -> None:
    hsm, ped = make_pair()
    frame = hsm.start_handshake()
    (failed,) = ped.receive_frame(type(frame)(frame.type, b"\x07" + frame.payload[1:]))
    assert isinstance(failed, ev.SessionFailed)
    with pytest.raises(Unsupported):
        deliver(hsm, ped.frames_to_send())


def test_frames_before_the_channel_fail_the_ped_session() -> None:
    hsm, _ = connected()
    sealed = hsm.show_message("x")
    _, fresh = make_pair()
    (failed,) = fresh.receive_frame(sealed)
    assert isinstance(failed, ev.SessionFailed)
    hsm2, ped2 = make_pair()
    ped2.receive_frame(hsm2.start_handshake())
    (failed,) = ped2.receive_frame(sealed)  # still waiting for the RPV
    assert isinstance(failed, ev.SessionFailed)


def test_ped_refuses_responses_from_the_hsm() -> None:
    from ped.ops.messages import ShowDone as Done

    hsm, ped = connected()
    assert hsm._channel is not None
    (failed,) = ped.receive_frame(hsm._channel.seal(Done(1).encode()))
    assert isinstance(failed, ev.SessionFailed)


def test_hsm_refuses_mismatched_answers() -> None:
    from ped.ops.messages import ReadResult as Result

    hsm, ped = connected()
    ped.receive_frame(hsm.read_secret(Color.BLUE))
    assert ped._channel is not None
    wrong_id = ped._channel.seal(Result(99, Color.BLUE, KEYSET, 1, 1, SECRET).encode())
    with pytest.raises(RemoteProtocolError, match="operation 99"):
        hsm.receive_frame(wrong_id)

    hsm, ped = connected()
    ped.receive_frame(hsm.read_secret(Color.BLUE))
    assert ped._channel is not None
    wrong_colour = ped._channel.seal(Result(1, Color.RED, KEYSET, 1, 1, SECRET).encode())
    with pytest.raises(RemoteProtocolError, match="red"):
        hsm.receive_frame(wrong_colour)

    hsm, ped = connected()
    ped.receive_frame(hsm.show_message("x"))
    assert ped._channel is not None
    wrong_kind = ped._channel.seal(Result(1, Color.BLUE, KEYSET, 1, 1, SECRET).encode())
    with pytest.raises(RemoteProtocolError, match="answered ShowMessage"):
        hsm.receive_frame(wrong_kind)


def test_transition_tables_cover_every_state() -> None:
    from ped.ops.hsm_side import TRANSITIONS as HSM_TRANSITIONS
    from ped.ops.ped_side import TRANSITIONS as PED_TRANSITIONS

    assert {s for s, _ in PED_TRANSITIONS} | set(PED_TRANSITIONS.values()) == set(PedState)
    assert {s for s, _ in HSM_TRANSITIONS} | set(HSM_TRANSITIONS.values()) >= set(HsmSideState) - {
        HsmSideState.FAILED
    }
