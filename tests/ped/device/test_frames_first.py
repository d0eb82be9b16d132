"""`frames_first` (pedserver's drivers): a session's frame is handed over before the device
events behind it are parsed; those still arrive, in order, and nothing waits in a read
while a frame sits in the buffer."""

from __future__ import annotations

import hmac

import pytest
import trio
import trio.testing

from keys.colors import Color
from ped.device import DeviceGone
from ped.device.connection import DeviceConnection
from ped.device.emulated import output
from ped.device.emulated.auto import AutoOperator
from ped.device.emulated.server import EmulatedPed
from ped.device.messages import (
    ConnectionRole,
    DeviceEvent,
    DeviceMessage,
    EventKind,
    Hello,
    Info,
    SessionClose,
    SessionData,
    SessionOpen,
    SessionOpened,
    encode_message,
)
from ped.hsm_api import open_ped_session
from ped.transport import FrameTransport
from ped.wire.framing import NEED_DATA, Frame
from pedtools.fakes.inprocess import InProcessPedDriver

from .conftest import Ring
from .test_robustness import ScriptedDevice

ANSWER = Frame(0x21, b"answer")


def _key_read(session: int) -> DeviceEvent:
    return DeviceEvent(session, EventKind.KEY_READ, int(Color.BLUE), "ab", "ok")


def _finished(session: int) -> DeviceEvent:
    return DeviceEvent(session, EventKind.OP_FINISHED, int(Color.BLUE), "ab", "ok")


def scripted(  # type: ignore[no-untyped-def]
    reply: bytes | None = None, *, answer_to: int = 1, then_close: bool = False
):
    """A device that opens sessions and, on the first SESSION_DATA of session
    *answer_to*, writes *reply* (one write), then keeps the stream open (or closes it)."""

    async def device(stream: trio.abc.Stream) -> None:
        conn = DeviceConnection(ConnectionRole.DEVICE)
        while data := await stream.receive_some(65536):
            conn.receive_data(data)
            while (message := conn.next_event()) is not NEED_DATA:
                if isinstance(message, Hello):
                    await stream.send_all(conn.send(Info(1, "m", "f", "s", "remote")))
                elif isinstance(message, SessionOpen):
                    await stream.send_all(conn.send(SessionOpened(message.session)))
                elif isinstance(message, SessionData) and message.session == answer_to:
                    assert reply is not None
                    await stream.send_all(reply)
                    if then_close:
                        await stream.aclose()
                        return
        await trio.sleep_forever()

    return device


def _bytes(*messages: DeviceMessage) -> bytes:
    return b"".join(encode_message(m) for m in messages)


async def answered(
    nursery: trio.Nursery, reply: bytes, *, then_close: bool = False, frames_first: bool = True
) -> tuple[ScriptedDevice, FrameTransport, list[object]]:
    """A driver (frames_first unless told) whose device wrote *reply* to the first
    request; the session's receive has returned the answer."""
    driver = ScriptedDevice(nursery, scripted(reply, then_close=then_close))
    driver.frames_first = frames_first
    events: list[object] = []
    driver.on_event = events.append
    await driver.open()
    session = await driver.open_session()
    await session.send(Frame(0x20, b"ask"))
    with trio.fail_after(5):
        assert await session.receive() == ANSWER
    return driver, session, events


async def test_the_frame_is_handed_over_before_the_events_behind_it(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    reply = _bytes(SessionData(1, ANSWER), _key_read(1), _finished(1))
    driver, session, events = await answered(nursery, reply)
    assert events == []  # not parsed yet: the answer went first
    # The next receive (pedserver's pump is always in one) dispatches them, in order,
    # without waiting for the device to write anything more.
    async with trio.open_nursery() as inner:
        inner.start_soon(session.receive)
        await trio.testing.wait_all_tasks_blocked()
        assert events == [_key_read(1), _finished(1)]
        inner.cancel_scope.cancel()
    await driver.aclose()


async def test_closing_the_session_hands_over_the_events_left(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    reply = _bytes(SessionData(1, ANSWER), _key_read(1), _finished(1))
    driver, session, events = await answered(nursery, reply)
    await session.aclose()  # the HSM hung up right after its answer
    assert events == [_key_read(1), _finished(1)]
    await driver.aclose()


async def test_closing_the_driver_hands_over_the_events_left(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    reply = _bytes(SessionData(1, ANSWER), _finished(1))
    driver, _session, events = await answered(nursery, reply)
    await driver.aclose()
    assert events == [_finished(1)]


async def test_no_one_waits_in_a_read_while_another_sessions_frame_is_buffered(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    # Both sessions' frames arrive in one read; session 2's receiver must get its frame
    # although the device writes nothing more (it would hang in a read otherwise).
    other = Frame(0x21, b"for two")
    reply = _bytes(SessionData(1, ANSWER), _key_read(1), SessionData(2, other))
    driver = ScriptedDevice(nursery, scripted(reply))
    driver.frames_first = True
    events: list[object] = []
    driver.on_event = events.append
    await driver.open()
    one = await driver.open_session()
    two = await driver.open_session()
    got: list[Frame] = []

    async def receive_two() -> None:
        got.append(await two.receive())

    with trio.fail_after(5):
        async with trio.open_nursery() as inner:
            inner.start_soon(receive_two)
            await trio.testing.wait_all_tasks_blocked()
            await one.send(Frame(0x20, b"ask"))
            assert await one.receive() == ANSWER
    assert got == [other]
    assert events == [_key_read(1)]
    await driver.aclose()


async def test_a_broken_frame_behind_the_answer_fails_the_device_after_it(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    broken_event = b"RP\x01\x36\x00\x00\x00\x01\xff"
    driver = ScriptedDevice(nursery, scripted(_bytes(SessionData(1, ANSWER)) + broken_event))
    driver.frames_first = True
    await driver.open()
    session = await driver.open_session()
    await session.send(Frame(0x20, b"ask"))
    with trio.fail_after(5):
        assert await session.receive() == ANSWER
        with pytest.raises(DeviceGone, match="broke the protocol"):
            await session.receive()
    await driver.aclose()


async def test_frames_first_off_dispatches_the_whole_read(nursery: trio.Nursery) -> None:
    # Without frames_first (a local HSM's driver, no pump of its own), the events of the
    # read are logged by the time the frame is returned, as before.
    reply = _bytes(SessionData(1, ANSWER), _key_read(1), _finished(1), SessionClose(2))
    driver, _session, events = await answered(nursery, reply, frames_first=False)
    assert events == [_key_read(1), _finished(1)]
    await driver.aclose()


async def test_the_emulated_ped_writes_its_answer_before_the_operations_events(
    ring: Ring, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The PED's events ride with its answer (held up to EVENT_HOLD); the PIN's scrypt
    # takes longer than the 30 ms hold, so hold them for the whole operation here.
    monkeypatch.setattr(output, "EVENT_HOLD", 600.0)
    ped = EmulatedPed(ring.path, serial="T-1")
    nursery.start_soon(
        AutoOperator(ped.panel, ring.path, pin_file=ring.pin_file).run  # type: ignore[arg-type]
    )
    driver = InProcessPedDriver(ped, nursery)
    driver.frames_first = True
    events: list[DeviceEvent] = []
    driver.on_event = events.append
    await driver.open()
    async with open_ped_session(
        await driver.open_session(), rpv=ring.rpv, hsm_serial="HSM-1"
    ) as session:
        before = len(events)
        result = await session.read_secret(Color.BLUE, label="HSM SO")
        assert hmac.compare_digest(bytes(result.secret), bytes(ring.so_expected()))
        # The answer came first in the PED's write: none of the read's events is parsed
        # when read_secret returns.
        assert events[before:] == []
    await driver.aclose()
    after = [e.kind for e in events[before:]]
    assert after.count(EventKind.KEY_READ) == 2
    assert after[0] is EventKind.OP_STARTED and after[-1] is EventKind.OP_FINISHED


async def test_events_before_a_truncated_end_are_still_handed_over(
    nursery: trio.Nursery, autojump_clock: object
) -> None:
    # The PED dies in the middle of a frame: what it sent whole before still counts.
    whole = _bytes(SessionData(1, ANSWER), _finished(1))
    reply = whole + encode_message(_key_read(1))[:-2]
    driver, session, events = await answered(nursery, reply, then_close=True)
    with trio.fail_after(5), pytest.raises(DeviceGone, match="unfinished frame"):
        await session.receive()
    assert events == [_finished(1)]
    await driver.aclose()
