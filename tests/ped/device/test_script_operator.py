"""The script operator through every prompt path, with hsm_api as the HSM."""

from __future__ import annotations

import hmac
import logging
import re
from pathlib import Path

import pytest
import trio
import trio.testing

from keys import Keyring, new_keyset
from keys.colors import Color
from ped.device import DeviceGone
from ped.device.emulated.panel import IDLE_TEXT
from ped.device.emulated.script import ScriptError, ScriptOperator, load_script
from ped.device.emulated.server import EmulatedPed
from ped.device.messages import DeviceEvent, EventKind
from ped.hsm_api import open_ped_session
from ped.ops.errors import KeysetMismatch, KeyTimeout, OperationCancelled
from pedtools.fakes.inprocess import InProcessPedDriver

from .conftest import Ring, key_of

BIG = 100_000.0  # HSM-side operation timeout far beyond the PED-key timeouts under test


async def setup(
    ring: Ring, nursery: trio.Nursery, script: str, **ped_options: object
) -> tuple[InProcessPedDriver, ScriptOperator, EmulatedPed, list[DeviceEvent]]:
    path = ring.path.parent / "script.toml"
    path.write_text(script)
    ped = EmulatedPed(ring.path, **ped_options)  # type: ignore[arg-type]
    operator = ScriptOperator(ped.panel, load_script(path, ring.path))
    nursery.start_soon(operator.run)
    driver = InProcessPedDriver(ped, nursery)
    events: list[DeviceEvent] = []
    driver.on_event = events.append
    await driver.open()
    return driver, operator, ped, events


def name(ring: Ring, color: Color, index: int = 1) -> str:
    return key_of(ring, color, index).name


def orange_steps(ring: Ring) -> str:
    return f'[[step]]\nexpect = "Insert a ORANGE"\ninsert = "{name(ring, Color.ORANGE)}"\n'


async def test_read_m_of_n_with_pin(ring: Ring, nursery: trio.Nursery) -> None:
    script = (
        orange_steps(ring)
        + f"""
[[step]]
expect = "Insert a BLUE PED key"
insert = "{name(ring, Color.BLUE, 3)}"
[[step]]
expect = "Enter PED PIN"
pin = "{ring.so_pin}"
[[step]]
expect = "Key 2 of 2"
insert = "{name(ring, Color.BLUE, 1)}"
"""
    )
    driver, operator, _ped, events = await setup(ring, nursery, script)
    async with open_ped_session(await driver.open_session(), rpv=ring.rpv, hsm_serial="H") as ped:
        result = await ped.read_secret(Color.BLUE, ring.so_keyset, label="HSM SO")
        assert hmac.compare_digest(bytes(result.secret), bytes(ring.so_expected()))
    assert operator.done.is_set()
    assert [e.outcome for e in events if e.kind is EventKind.OP_FINISHED] == ["ok", "ok"]


async def test_imprint_m_of_n_pin_duplicates(ring: Ring, nursery: trio.Nursery) -> None:
    blanks = [p.name for p in Keyring(ring.path).blanks()]
    blanks += [p.name for p in Keyring(ring.path).add_blanks(3)]
    script = (
        orange_steps(ring)
        + """
[[step]]
expect = "Reuse an existing keyset"
press = "NO"
[[step]]
expect = "M value"
pin = "2"
[[step]]
expect = "N value"
pin = "2"
[[step]]
expect = "New PED PIN"
pin = "9876"
[[step]]
expect = "Confirm new PED PIN"
pin = "9876"
[[step]]
expect = "duplicating"
press = "YES"
[[step]]
expect = "Copies of each key"
pin = "1"
"""
        + "".join(f'[[step]]\nexpect = "Insert a blank key"\ninsert = "{b}"\n' for b in blanks[:4])
    )
    driver, _operator, _ped, events = await setup(ring, nursery, script)
    async with open_ped_session(await driver.open_session(), rpv=ring.rpv, hsm_serial="H") as ped:
        result = await ped.imprint(
            Color.WHITE, new_secret=bytearray(32), allow_reuse=True, label="audit"
        )
        assert (result.m, result.n, result.pin, result.copies) == (2, 2, True, 4)
    written = Keyring(ring.path).keys(Color.WHITE, result.keyset_id)
    assert sorted(e.path.name for e in written) == sorted(blanks[:4])
    assert all(e.header.pin_protected for e in written)  # type: ignore[union-attr]
    assert len([e for e in events if e.kind is EventKind.KEY_WRITTEN]) == 4


async def test_wrong_colour_is_refused_on_the_ped_and_reprompted(
    ring: Ring, nursery: trio.Nursery
) -> None:
    script = (
        orange_steps(ring)
        + f"""
[[step]]
expect = "Insert a RED"
insert = "{name(ring, Color.BLUE)}"
[[step]]
expect = "Wrong colour: BLUE key"
insert = "{name(ring, Color.RED)}"
"""
    )
    driver, _operator, _ped, events = await setup(ring, nursery, script)
    async with open_ped_session(await driver.open_session(), rpv=ring.rpv, hsm_serial="H") as ped:
        result = await ped.read_secret(Color.RED)
        assert (result.m, result.n) == (1, 1)
    refused = [e for e in events if e.kind is EventKind.KEY_REFUSED]
    assert [(e.color, e.outcome) for e in refused] == [(int(Color.RED), "wrong-colour")]


async def test_blank_is_refused_on_the_ped(ring: Ring, nursery: trio.Nursery) -> None:
    blank = Keyring(ring.path).blanks()[0].name
    script = (
        orange_steps(ring)
        + f"""
[[step]]
expect = "Insert a RED"
insert = "{blank}"
[[step]]
expect = "Key is blank"
insert = "{name(ring, Color.RED)}"
"""
    )
    driver, _operator, _ped, events = await setup(ring, nursery, script)
    async with open_ped_session(await driver.open_session(), rpv=ring.rpv, hsm_serial="H") as ped:
        await ped.read_secret(Color.RED)
    assert [e.outcome for e in events if e.kind is EventKind.KEY_REFUSED] == ["blank"]


async def test_key_of_another_keyset_is_a_keyset_mismatch(
    ring: Ring, nursery: trio.Nursery
) -> None:
    other = Keyring(ring.path).imprint(new_keyset(Color.BLUE, "other SO", 1, 1), create=True)
    script = (
        orange_steps(ring)
        + f"""
[[step]]
expect = "Insert a BLUE"
insert = "{other[0].name}"
[[step]]
expect = "Wrong keyset"
"""
    )
    driver, operator, _ped, _events = await setup(ring, nursery, script)
    async with open_ped_session(await driver.open_session(), rpv=ring.rpv, hsm_serial="H") as ped:
        with pytest.raises(KeysetMismatch):
            await ped.read_secret(Color.BLUE, ring.so_keyset)
        assert ped.usable
    await operator.done.wait()


async def test_key_timeout(
    ring: Ring, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    script = orange_steps(ring) + '[[step]]\nexpect = "Insert a RED"\n'
    driver, _operator, ped_device, events = await setup(ring, nursery, script)
    async with open_ped_session(
        await driver.open_session(), rpv=ring.rpv, hsm_serial="H", op_timeout=BIG
    ) as ped:
        start = trio.current_time()
        with pytest.raises(KeyTimeout):
            await ped.read_secret(Color.RED)  # default PED-key timeout: 200 s
        assert trio.current_time() - start >= 200
    assert ped_device.panel.screen.text == IDLE_TEXT
    assert [e.outcome for e in events if e.kind is EventKind.OP_FINISHED][-1] == "key-timeout"


async def test_clr_cancels_on_the_ped(ring: Ring, nursery: trio.Nursery) -> None:
    script = orange_steps(ring) + '[[step]]\nexpect = "Insert a RED"\npress = "CLR"\n'
    driver, _operator, _ped, _events = await setup(ring, nursery, script)
    async with open_ped_session(await driver.open_session(), rpv=ring.rpv, hsm_serial="H") as ped:
        with pytest.raises(OperationCancelled):
            await ped.read_secret(Color.RED)
        assert ped.usable


async def test_hsm_cancel_returns_the_ped_to_idle(
    ring: Ring, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    script = orange_steps(ring) + '[[step]]\nexpect = "Insert a RED"\n'
    driver, operator, ped_device, _events = await setup(ring, nursery, script)
    async with open_ped_session(
        await driver.open_session(), rpv=ring.rpv, hsm_serial="H", op_timeout=BIG
    ) as ped:
        with trio.move_on_after(50):
            await ped.read_secret(Color.RED)
        await operator.done.wait()
        assert ped.usable
        await ped.show_message("still here")
    assert ped_device.panel.screen.text == "still here"


async def test_unplug_is_device_gone(ring: Ring, nursery: trio.Nursery) -> None:
    script = orange_steps(ring) + '[[step]]\nexpect = "Insert a RED"\nunplug = true\n'
    driver, _operator, _ped, _events = await setup(ring, nursery, script)
    transport = await driver.open_session()
    with pytest.raises(DeviceGone):
        async with open_ped_session(transport, rpv=ring.rpv, hsm_serial="H") as ped:
            await ped.read_secret(Color.RED)
    with pytest.raises(DeviceGone):
        await driver.open_session()
    await driver.open()  # plugged back in: the in-process PED serves a new connection
    assert driver.is_open


async def test_expect_not_shown_fails_the_script(
    ring: Ring, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    path = ring.path.parent / "bad.toml"
    path.write_text('[[step]]\nexpect = "Insert a GREEN"\ntimeout = 5\n')
    ped = EmulatedPed(ring.path)
    operator = ScriptOperator(ped.panel, load_script(path, ring.path))
    with pytest.raises(ScriptError, match=r"step 1: .*GREEN.*Awaiting command"):
        await operator.run()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[step]]\nfrobnicate = 1\n", "unknown field"),
        ('[[step]]\npress = "MAYBE"\n', "not a PED key"),
        ('[[step]]\nexpect = "("\n', "not a valid regex"),
        ('[[step]]\npin = "12a"\n', "digits"),
        ("title = 1\n", "unknown table"),
        ("", "at least one"),
        ("[[step\n", "not valid TOML"),
    ],
)
def test_bad_scripts_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ScriptError, match=message):
        load_script(path, tmp_path)


async def test_local_mode_no_reads_the_orange_key(
    ring: Ring, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ped.channel

    monkeypatch.setattr(
        ped.channel, "LOCAL_RPV", getattr(ped.channel, "LOCAL_RPV", bytes(32)), raising=False
    )
    script = '[[step]]\nexpect = "Without an orange key"\npress = "NO"\n' + orange_steps(ring)
    driver, operator, _ped, events = await setup(ring, nursery, script, mode="local")
    async with open_ped_session(await driver.open_session(), rpv=ring.rpv, hsm_serial="H") as p:
        await p.show_message("with the orange key")
    assert operator.done.is_set()
    assert any(e.kind is EventKind.KEY_READ and e.color == Color.ORANGE for e in events)


async def test_a_waiting_ped_says_so_at_once(
    ring: Ring,
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pedemu")
    script = (
        orange_steps(ring)
        + '[[step]]\nexpect = "Insert a RED"\nwait = 60\n[[step]]\npress = "CLR"\n'
    )
    driver, operator, _ped, events = await setup(ring, nursery, script)
    async with open_ped_session(
        await driver.open_session(), rpv=ring.rpv, hsm_serial="H", op_timeout=BIG
    ) as ped:
        outcome: list[str] = []

        async def read() -> None:
            with pytest.raises(OperationCancelled):
                await ped.read_secret(Color.RED)
            outcome.append("cancelled")

        async with trio.open_nursery() as inner:
            inner.start_soon(read)
            # DEVICE_EVENTs ride with the next frame, but one that has none to ride with
            # (the PED waits for its operator) still reaches the host while it waits.
            while not any(e.kind is EventKind.OP_STARTED and e.color == Color.RED for e in events):
                await trio.sleep(0.001)
            assert not outcome and not operator.done.is_set()
        assert outcome == ["cancelled"]
    # pedemu's own log says that the PED waits for its operator.
    assert re.search(r"session \d+: op-started red read-secret", caplog.text), caplog.text
