"""The emulated PED's progress NOTICEs, as the HSM receives them through the device protocol."""

from __future__ import annotations

import hmac
from pathlib import Path

import trio

from keys.colors import Color
from ped.device.emulated.auto import AutoOperator
from ped.device.emulated.script import ScriptOperator, load_script
from ped.device.emulated.server import EmulatedPed
from ped.hsm_api import Notice, NoticeKind, open_ped_session
from pedtools.fakes.inprocess import InProcessPedDriver

from .conftest import Ring, key_of

Seen = tuple[NoticeKind, int, int]


def _script_operator(ped: EmulatedPed, ring: Ring, tmp_path: Path) -> ScriptOperator:
    """An operator who acts after seeing each prompt, as a person does: the PED waits."""
    first, second = key_of(ring, Color.BLUE, 1), key_of(ring, Color.BLUE, 2)
    path = tmp_path / "operator.toml"
    path.write_text(
        "[[step]]\n"
        'expect = "Insert a ORANGE"\n'
        f'insert = "{key_of(ring, Color.ORANGE)}"\n'
        "[[step]]\n"
        'expect = "Insert a BLUE"\n'
        f'insert = "{second}"\n'
        "[[step]]\n"
        'expect = "Enter PED PIN"\n'
        f'pin = "{ring.so_pin}"\n'
        "[[step]]\n"
        'expect = "Key 2 of 2"\n'
        f'insert = "{first}"\n'
    )
    return ScriptOperator(ped.panel, load_script(path, ring.path))


async def _read(
    ring: Ring, nursery: trio.Nursery, color: Color, label: str, tmp_path: Path | None = None
) -> list[Seen]:
    ped = EmulatedPed(ring.path, serial="T-1")
    if tmp_path is None:  # the auto operator: the key is in before the PED asks
        operator = AutoOperator(ped.panel, ring.path, pin_file=ring.pin_file)
        nursery.start_soon(operator.run)  # type: ignore[arg-type]
    else:
        nursery.start_soon(_script_operator(ped, ring, tmp_path).run)
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
    ring: Ring, nursery: trio.Nursery, tmp_path: Path
) -> None:
    # 2 of 3 blue keys with a PED PIN.  M is unknown until the first key is read; the
    # last key needs no "read" notice (the answer says it).
    assert await _read(ring, nursery, Color.BLUE, "HSM SO", tmp_path) == [
        (NoticeKind.INSERT_KEY, 1, 0),
        (NoticeKind.KEY_ACCEPTED, 1, 2),
        (NoticeKind.ENTER_PIN, 0, 0),
        (NoticeKind.INSERT_KEY, 2, 2),
    ]


async def test_an_operator_already_answering_gets_no_notices(
    ring: Ring, nursery: trio.Nursery
) -> None:
    # The benchmark's hot path (the auto operator, a 1-of-1 read without PIN): the key
    # is in before the PED asks, so no notice costs a frame; nor for M of N with a PIN.
    assert await _read(ring, nursery, Color.RED, "domain") == []
    assert await _read(ring, nursery, Color.BLUE, "HSM SO") == []
