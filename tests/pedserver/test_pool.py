"""The PED pool (``pedserver --device A --device B ...``): each session goes to the least
busy PED, ids stay unique, events name the right session, absent PEDs are skipped."""

from __future__ import annotations

import pytest

from ped.device import DeviceEvent, DeviceNotFound, EventKind
from ped.transport import PedBusy
from ped.wire.framing import Frame
from pedserver.cli import build_parser
from pedserver.pool import PedPool
from pedserver.settings import Settings
from tests.pedserver.fakes import FakeDriver


def _pool(n: int, *, present: tuple[bool, ...] | None = None) -> tuple[PedPool, list[FakeDriver]]:
    flags = present or (True,) * n
    members = [FakeDriver(f"fake:{i}", present=flags[i]) for i in range(n)]
    return PedPool(members), members


async def test_open_opens_the_first_ped_and_sessions_spread_over_the_pool():
    pool, members = _pool(3)
    info = await pool.open()
    assert info.serial == "FAKE-0001" and pool.is_open
    assert [m.is_open for m in members] == [True, False, False]  # the rest: on demand
    sessions = [await pool.open_session() for _ in range(3)]
    assert [s.member for s in sessions] == [0, 1, 2]  # one PED each
    assert len({s.id for s in sessions}) == 3
    assert all(m.is_open for m in members)
    # The fourth session goes to a least busy PED; closing one frees its PED first.
    await sessions[1].aclose()
    fourth = await pool.open_session()
    assert fourth.member == 1
    await pool.aclose()
    assert all(m.closed for m in members)


async def test_sessions_on_different_peds_do_not_block_each_other():
    pool, _ = _pool(2)
    await pool.open()
    a, b = await pool.open_session(), await pool.open_session()
    await a.begin_operation(wait=0)
    await b.begin_operation(wait=0)  # another PED: no PedBusy
    await a.send(Frame(0x23, b"abc"))
    assert (await a.receive()).payload == b"cba"
    c = await pool.open_session()  # shares a PED with a or b, whose lock is held
    with pytest.raises(PedBusy):
        await c.begin_operation(wait=0)
    await pool.aclose()


async def test_device_events_carry_the_pool_session_id():
    pool, members = _pool(2)
    seen: list[object] = []
    pool.on_event = seen.append
    await pool.open()
    first, second = await pool.open_session(), await pool.open_session()
    await second.begin_operation(wait=0)
    await second.send(Frame(0x23, b"x"))
    event = seen[-1]
    assert isinstance(event, DeviceEvent) and event.kind is EventKind.KEY_READ
    assert event.session == second.id != first.id
    members[0].on_event(DeviceEvent(0, EventKind.KEY_READ))  # not about a session: as is
    assert seen[-1] == DeviceEvent(0, EventKind.KEY_READ)
    await pool.aclose()


async def test_frames_first_reaches_every_ped_and_events_at_close_keep_the_session_id():
    # pedserver sets frames_first on its driver: a pool passes it to each PED's driver,
    # and the events a PED's session hands over while closing still name the session.
    pool, members = _pool(2)
    pool.frames_first = True
    assert pool.frames_first and all(m.frames_first for m in members)
    seen: list[object] = []
    pool.on_event = seen.append
    await pool.open()
    session = await pool.open_session()
    inner = session.inner
    close_inner = inner.aclose

    async def close_handing_over_the_last_event() -> None:
        members[session.member].on_event(DeviceEvent(inner.id, EventKind.OP_FINISHED))
        await close_inner()

    inner.aclose = close_handing_over_the_last_event  # type: ignore[method-assign]
    await session.aclose()
    assert seen == [DeviceEvent(session.id, EventKind.OP_FINISHED)]
    await pool.aclose()


async def test_absent_peds_are_skipped_and_named_when_none_is_there():
    pool, _ = _pool(3, present=(False, True, False))
    await pool.open()
    sessions = [await pool.open_session() for _ in range(2)]
    assert {s.member for s in sessions} == {1}
    await pool.aclose()
    empty, _ = _pool(2, present=(False, False))
    with pytest.raises(DeviceNotFound, match="fake:0: no PED here; fake:1: no PED here"):
        await empty.open()


def test_pool_bounds():
    with pytest.raises(ValueError, match="at least one"):
        PedPool([])


def test_device_given_twice_is_a_pool_in_the_settings():
    args = build_parser().parse_args(
        ["mode", "start", "--device", "socket:/a", "--device", "emulated:/k?operator=auto"]
    )
    assert args.device == ["socket:/a", "emulated:/k?operator=auto"]
    settings = Settings(device="socket:/a\nemulated:/k?operator=auto\n")
    assert settings.devices == ("socket:/a", "emulated:/k?operator=auto")
    assert Settings(device="usb").devices == ("usb",)
