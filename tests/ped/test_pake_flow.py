"""A remote RPV initialisation through a real driver and the emulated PED (in process):
the password typed on the PED keys the channel in which the new RPV is imprinted."""

from __future__ import annotations

import hmac
import secrets
import time
from pathlib import Path

import pytest
import trio

from keys import Keyring, combine, load_image
from keys.colors import Color
from ped.channel.errors import HandshakeRefused
from ped.device.emulated.auto import AutoOperator
from ped.device.emulated.panel import Panel, Press, PromptKind, Screen
from ped.device.emulated.server import EmulatedPed
from ped.hsm_api.pake import open_pake_session
from ped.pake import OneTimePassword, PasswordVoid, WrongPassword
from pedtools.fakes.inprocess import InProcessPedDriver

SERIAL = "150001"


class Typist:
    """The PED's operator for the password prompt: types the next of *entries* (or
    presses CLR when none is left); records each password screen."""

    def __init__(self, panel: Panel, entries: list[str]) -> None:
        self.entries = list(entries)
        self.screens: list[Screen] = []
        panel.observe(self._on_screen)
        self.panel = panel

    def _on_screen(self, screen: Screen) -> None:
        if screen.echo or screen.prompt.kind is not PromptKind.PASSWORD:
            return
        self.screens.append(screen)
        if self.entries:
            for key in self.entries.pop(0):
                self.panel.send_nowait(_press(key))
            self.panel.send_nowait(_press("ENTER"))
        else:
            self.panel.send_nowait(_press("CLR"))


def _press(key: str) -> Press:
    return Press(key)


async def _start(tmp_path: Path, nursery: trio.Nursery, entries: list[str]) -> tuple[
    InProcessPedDriver, Typist, Path
]:
    keys = tmp_path / "keys"
    keys.mkdir()
    Keyring(keys).add_blanks(2)
    ped = EmulatedPed(keys, serial="T-1")
    typist = Typist(ped.panel, entries)
    nursery.start_soon(AutoOperator(ped.panel, keys).run)
    driver = InProcessPedDriver(ped, nursery)
    await driver.open()
    return driver, typist, keys


def _orange_secret(keys: Path) -> bytes:
    (entry,) = list(Keyring(keys).keys(Color.ORANGE))
    image = load_image(entry.path)
    return bytes(combine([image.share()]))


async def test_right_password_imprints_the_new_rpv(tmp_path: Path, nursery: trio.Nursery) -> None:
    pw = OneTimePassword.issue(time.time())
    driver, typist, keys = await _start(tmp_path, nursery, [pw.display().replace(" ", "")])
    rpv = bytearray(secrets.token_bytes(32))
    transport = await driver.open_session()
    async with open_pake_session(transport, password=pw, hsm_serial=SERIAL) as ped:
        result = await ped.imprint(Color.ORANGE, new_secret=bytearray(rpv), label="RPV")
        assert result.keyset_id
    await driver.aclose()
    assert hmac.compare_digest(_orange_secret(keys), bytes(rpv))
    # The screen named the HSM and the length, never the digits (stars only).
    assert typist.screens and SERIAL in " ".join(typist.screens[0].lines)
    with pytest.raises(PasswordVoid, match="used"):
        pw.check(0.0)


async def test_wrong_password_imprints_nothing_and_costs_a_try(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    pw = OneTimePassword("12345678", issued_at=time.time())
    driver, _typist, keys = await _start(tmp_path, nursery, ["87654321", "12345678"])
    transport = await driver.open_session()
    with pytest.raises(WrongPassword):
        async with open_pake_session(transport, password=pw, hsm_serial=SERIAL):
            raise AssertionError("a wrong password opened a session")
    await transport.aclose()
    assert pw.tries_left == 2
    assert not list(Keyring(keys).keys(Color.ORANGE))
    # The next try, with the right password, works.
    transport = await driver.open_session()
    async with open_pake_session(transport, password=pw, hsm_serial=SERIAL) as ped:
        await ped.imprint(Color.ORANGE, new_secret=bytearray(32), label="RPV")
    await driver.aclose()


async def test_cancel_on_the_ped_is_a_refusal_that_costs_no_try(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    pw = OneTimePassword("12345678", issued_at=time.time())
    driver, _typist, _keys = await _start(tmp_path, nursery, [])
    transport = await driver.open_session()
    with pytest.raises(HandshakeRefused):
        async with open_pake_session(transport, password=pw, hsm_serial=SERIAL):
            raise AssertionError("unreachable")
    await driver.aclose()
    assert pw.tries_left == 3


class Announced:
    """The in-process session, listening to operation timeouts as pedclient's link does:
    records what was announced before each hold of the PED."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self._timeout: float | None = None
        self.holds: list[float | None] = []

    def announce_op_timeout(self, seconds: float) -> None:
        self._timeout = seconds

    async def begin_operation(self, *, wait: float = 0.0) -> None:
        self.holds.append(self._timeout)
        await self._inner.begin_operation(wait=wait)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


async def test_the_password_hold_announces_its_bound(tmp_path: Path, nursery: trio.Nursery) -> None:
    """pedserver closes a hold that outlasts the operation timeout announced before it
    (else only after its max_op_hold, minutes later): the PAKE's hold announces the
    password entry plus the cancel grace, the session's holds then their own pedo."""
    pw = OneTimePassword.issue(time.time())
    driver, _typist, _keys = await _start(tmp_path, nursery, [pw.display().replace(" ", "")])
    transport = Announced(await driver.open_session())
    async with open_pake_session(
        transport, password=pw, hsm_serial=SERIAL,  # type: ignore[arg-type]
        entry_timeout=120, cancel_grace=5, op_timeout=300,
    ) as ped:
        await ped.show_message("RPV init")
    await driver.aclose()
    assert transport.holds[0] == 125, transport.holds
    assert transport.holds[-1] == 300, transport.holds
