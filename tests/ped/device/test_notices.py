"""The emulated PED's progress NOTICEs, as the HSM receives them through the device protocol."""

from __future__ import annotations

import hmac

import trio

from keys.colors import Color
from ped.device.emulated.auto import AutoOperator
from ped.device.emulated.server import EmulatedPed
from ped.hsm_api import Notice, NoticeKind, open_ped_session
from pedtools.fakes.inprocess import InProcessPedDriver

from .conftest import Ring

Seen = tuple[NoticeKind, int, int]


async def _read(ring: Ring, nursery: trio.Nursery, color: Color, label: str) -> list[Seen]:
    ped = EmulatedPed(ring.path, serial="T-1")
    nursery.start_soon(
        AutoOperator(ped.panel, ring.path, pin_file=ring.pin_file).run  # type: ignore[arg-type]
    )
    driver = InProcessPedDriver(ped, nursery)
    await driver.open()
    notices: list[Notice] = []
    with trio.fail_after(30):
        async with open_ped_session(
            await driver.open_session(),
            rpv=ring.rpv,
            hsm_serial="HSM-1",
            on_notice=notices.append,
        ) as session:
            result = await session.read_secret(color, label=label)
            if color is Color.BLUE:
                assert hmac.compare_digest(bytes(result.secret), bytes(ring.so_expected()))
            result.secret[:] = bytes(len(result.secret))
    await driver.aclose()
    assert all(not n.text for n in notices)  # kind and step/total only: nothing else
    return [(n.kind, n.step, n.total) for n in notices]


async def test_an_m_of_n_read_with_pin_says_each_key_and_the_pin(
    ring: Ring, nursery: trio.Nursery
) -> None:
    # 2 of 3 blue keys with a PED PIN.  M is unknown until the first key is read.
    assert await _read(ring, nursery, Color.BLUE, "HSM SO") == [
        (NoticeKind.INSERT_KEY, 1, 0),
        (NoticeKind.KEY_ACCEPTED, 1, 2),
        (NoticeKind.ENTER_PIN, 0, 0),
        (NoticeKind.INSERT_KEY, 2, 2),
        (NoticeKind.KEY_ACCEPTED, 2, 2),  # the PIN's scrypt still runs before the answer
    ]


async def test_a_one_of_one_read_without_pin_sends_a_single_notice(
    ring: Ring, nursery: trio.Nursery
) -> None:
    # The benchmark's hot path: "insert the key", then the answer itself (no "key 1 of 1
    # read" right before the answer that says so).
    assert await _read(ring, nursery, Color.RED, "domain") == [(NoticeKind.INSERT_KEY, 1, 0)]
