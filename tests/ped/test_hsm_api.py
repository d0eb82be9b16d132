"""The trio HSM-side API over an in-memory transport with a tiny PED."""

from __future__ import annotations

import pytest
import trio

from keys.colors import Color
from ped.channel import RefuseReason
from ped.errors import LocalProtocolError
from ped.hsm_api import (
    KeyTimeout,
    OperationCancelled,
    OperationTimeout,
    PedBusy,
    RpvMismatch,
    SessionBroken,
    TransportClosed,
    WrongColor,
    open_ped_session,
)
from ped.ops import ErrorCode
from ped.ops import events as ev
from ped.ops.messages import CloseReason, Notice

from .ops.memory import (
    PedLock,
    TinyPed,
    answer_after_cancel,
    answer_error,
    answer_imprint,
    answer_never,
    answer_secret,
    answer_show,
    transport_pair,
)

RPV = bytes(range(32))


async def test_read_imprint_show_and_wipe_on_close() -> None:
    hsm_t, ped_t = transport_pair()
    ped = TinyPed(
        RPV,
        {
            ev.ReadSecretRequested: answer_secret,
            ev.ImprintRequested: answer_imprint,
            ev.ShowRequested: answer_show,
        },
    )
    notices: list[Notice] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        async with open_ped_session(
            hsm_t, rpv=RPV, hsm_serial="150001", on_notice=notices.append
        ) as session:
            assert session.ped_info is not None and session.ped_info.model == "tinyped"
            result = await session.read_secret(Color.BLUE, bytes([1]) * 16, label="HSM SO")
            assert result.secret == bytearray([7]) * 32
            assert result.keyset_id == bytes([1]) * 16
            assert notices and notices[0].step == 1
            new = await session.imprint(Color.BLACK, new_secret=bytes(range(32)))
            assert (new.m, new.n, new.pin, new.copies, new.reused) == (2, 3, True, 3, False)
            assert new.secret == bytearray([8]) * 32  # PIN-derived login secret
            reused = await session.imprint(Color.ORANGE, allow_reuse=True)
            assert reused.reused and reused.secret == bytearray([9]) * 32
            await session.show_message("Hello")
        # The results are the caller's: closing the session does not touch them.
        assert result.secret == bytearray([7]) * 32
        for owned in (result, new, reused):
            with owned:
                pass
            assert owned.secret == bytearray(32)
    assert isinstance(ped.events[-1], ev.SessionClosed)
    # handshake + 4 operations, each inside begin/end_operation, plus the goodbye
    assert hsm_t.operations == 6


async def test_wrong_rpv_raises_on_both_ends() -> None:
    hsm_t, ped_t = transport_pair()
    ped = TinyPed(bytes(32))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        with pytest.raises(RpvMismatch):
            async with open_ped_session(hsm_t, rpv=RPV, hsm_serial="150001"):
                pytest.fail("the session must not open")
    assert isinstance(ped.events[-1], ev.SessionFailed)
    assert isinstance(ped.events[-1].error, RpvMismatch)


async def test_refused_handshake_no_orange_key() -> None:
    hsm_t, ped_t = transport_pair()
    ped = TinyPed(RPV, refuse_with=RefuseReason.KEY_TIMEOUT)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        with pytest.raises(KeyTimeout):
            async with open_ped_session(hsm_t, rpv=RPV, hsm_serial="150001"):
                pytest.fail("the session must not open")


async def test_typed_operation_errors_keep_session_usable() -> None:
    hsm_t, ped_t = transport_pair()
    ped = TinyPed(
        RPV,
        {
            ev.ReadSecretRequested: answer_error(ErrorCode.WRONG_COLOR),
            ev.ShowRequested: answer_show,
        },
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        async with open_ped_session(hsm_t, rpv=RPV, hsm_serial="150001") as session:
            with pytest.raises(WrongColor):
                await session.read_secret(Color.RED)
            assert session.usable
            await session.show_message("still here")


async def test_cancel_from_another_task(autojump_clock: object) -> None:
    hsm_t, ped_t = transport_pair()
    ped = TinyPed(RPV, {ev.ReadSecretRequested: answer_after_cancel})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        async with open_ped_session(hsm_t, rpv=RPV, hsm_serial="150001") as session:

            async def cancel_soon() -> None:
                await trio.sleep(1)
                await session.cancel()

            nursery.start_soon(cancel_soon)
            with pytest.raises(OperationCancelled):
                await session.read_secret(Color.BLUE)
            assert session.usable


async def test_op_timeout_cancels_on_ped_and_session_survives(autojump_clock: object) -> None:
    hsm_t, ped_t = transport_pair()
    ped = TinyPed(RPV, {ev.ReadSecretRequested: answer_after_cancel, ev.ShowRequested: answer_show})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        async with open_ped_session(hsm_t, rpv=RPV, hsm_serial="150001", op_timeout=920) as session:
            start = trio.current_time()
            with pytest.raises(OperationTimeout):
                await session.read_secret(Color.BLUE)
            assert trio.current_time() - start == pytest.approx(920)
            assert ped.cancelled.is_set()
            assert session.usable
            await session.show_message("after timeout")


async def test_unanswered_cancel_breaks_the_session(autojump_clock: object) -> None:
    hsm_t, ped_t = transport_pair()
    ped = TinyPed(RPV, {ev.ReadSecretRequested: answer_never})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        async with open_ped_session(
            hsm_t, rpv=RPV, hsm_serial="150001", op_timeout=30, cancel_grace=5
        ) as session:
            with pytest.raises(OperationTimeout):
                await session.read_secret(Color.BLUE)
            assert not session.usable
            with pytest.raises(SessionBroken):
                await session.show_message("x")
        nursery.cancel_scope.cancel()


async def test_caller_cancellation_sends_cancel(autojump_clock: object) -> None:
    hsm_t, ped_t = transport_pair()
    ped = TinyPed(RPV, {ev.ReadSecretRequested: answer_after_cancel, ev.ShowRequested: answer_show})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        async with open_ped_session(hsm_t, rpv=RPV, hsm_serial="150001") as session:
            with trio.move_on_after(50):
                await session.read_secret(Color.BLUE)
            assert ped.cancelled.is_set()
            assert session.usable
            await session.show_message("fine")


async def test_busy_ped(autojump_clock: object) -> None:
    lock = PedLock()
    hsm_t, _ped_t = transport_pair(lock)
    await lock.lock.acquire()
    with pytest.raises(PedBusy):
        async with open_ped_session(hsm_t, rpv=RPV, hsm_serial="150001", busy_wait=3):
            pytest.fail("the session must not open")


async def test_handshake_timeout(autojump_clock: object) -> None:
    hsm_t, _ped_t = transport_pair()  # nobody answers
    with pytest.raises(OperationTimeout):
        async with open_ped_session(hsm_t, rpv=RPV, hsm_serial="150001", op_timeout=920):
            pytest.fail("the session must not open")


async def test_transport_closed_mid_operation(autojump_clock: object) -> None:
    hsm_t, ped_t = transport_pair()
    ped = TinyPed(RPV, {ev.ReadSecretRequested: answer_never})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        async with open_ped_session(hsm_t, rpv=RPV, hsm_serial="150001") as session:

            async def drop() -> None:
                await trio.sleep(1)
                await ped_t.aclose()

            nursery.start_soon(drop)
            with pytest.raises(TransportClosed):
                await session.read_secret(Color.BLUE)
            assert not session.usable


@pytest.mark.parametrize(
    "kwargs",
    [{"op_timeout": 0}, {"op_timeout": float("nan")}, {"busy_wait": -1}, {"key_timeout": 0}],
)
async def test_bad_timeouts_are_refused_before_anything_is_sent(kwargs: dict[str, float]) -> None:
    hsm_t, _ped_t = transport_pair()
    with pytest.raises(LocalProtocolError):
        async with open_ped_session(hsm_t, rpv=RPV, hsm_serial="150001", **kwargs):
            pytest.fail("the session must not open")
    assert hsm_t.sent == [] and hsm_t.operations == 0


async def test_ped_goodbye_is_reported_as_closed(autojump_clock: object) -> None:
    hsm_t, ped_t = transport_pair()

    async def say_goodbye(ped: TinyPed, _event: object) -> None:
        ped.session.close(CloseReason.SHUTDOWN, "PED shutting down")

    ped = TinyPed(RPV, {ev.ShowRequested: say_goodbye})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        async with open_ped_session(hsm_t, rpv=RPV, hsm_serial="150001") as session:
            with pytest.raises(TransportClosed, match="shutdown"):
                await session.show_message("x")
            with pytest.raises(TransportClosed):
                await session.show_message("y")
        nursery.cancel_scope.cancel()


async def test_one_operation_at_a_time_per_session(autojump_clock: object) -> None:
    hsm_t, ped_t = transport_pair()
    order: list[str] = []

    async def slow_show(ped: TinyPed, event: ev.ShowRequested) -> None:
        order.append(f"start {event.text}")
        await trio.sleep(5)
        order.append(f"end {event.text}")
        ped.session.answer_show()

    ped = TinyPed(RPV, {ev.ShowRequested: slow_show})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        async with open_ped_session(hsm_t, rpv=RPV, hsm_serial="150001") as session:
            async with trio.open_nursery() as inner:
                inner.start_soon(session.show_message, "a")
                inner.start_soon(session.show_message, "b")
    assert order in (
        ["start a", "end a", "start b", "end b"],
        ["start b", "end b", "start a", "end a"],
    )
