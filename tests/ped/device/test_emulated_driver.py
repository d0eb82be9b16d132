"""`emulated:DIR`: the driver starts pedemu as a child process joined by a socket pair."""

from __future__ import annotations

import hmac
import os

import pytest
import trio

from keys.colors import Color
from ped.device import DeviceGone, DeviceNotFound, open_driver
from ped.device.subprocess_driver import SubprocessPedDriver
from ped.hsm_api import open_ped_session

from .conftest import Ring


async def test_emulated_uri_spawns_a_child_that_holds_the_keys(ring: Ring) -> None:
    driver = open_driver(f"emulated:{ring.path}?pin-file={ring.pin_file}&serial=CHILD-7")
    assert isinstance(driver, SubprocessPedDriver)
    info = await driver.open()
    assert (info.model, info.serial, info.mode) == ("pedemu", "CHILD-7", "remote")
    pid = driver.child_pid
    assert pid is not None and pid != os.getpid()
    transport = await driver.open_session()
    async with open_ped_session(transport, rpv=ring.rpv, hsm_serial="HSM-9") as ped:
        result = await ped.read_secret(Color.BLUE, ring.so_keyset)
        assert hmac.compare_digest(bytes(result.secret), bytes(ring.so_expected()))
    await transport.aclose()
    await driver.aclose()
    assert driver.child_pid is None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped: the child ended when its socket closed


async def test_missing_keyring_is_device_not_found(tmp_path) -> None:  # type: ignore[no-untyped-def]
    driver = open_driver(f"emulated:{tmp_path / 'nope'}")
    with pytest.raises(DeviceNotFound, match="does not exist"):
        await driver.open()


async def test_child_startup_error_is_reported(ring: Ring, tmp_path) -> None:  # type: ignore[no-untyped-def]
    driver = open_driver(f"emulated:{ring.path}?operator=script:{tmp_path / 'missing.toml'}")
    with pytest.raises(DeviceNotFound, match="cannot read the script"):
        await driver.open()
    await driver.aclose()


async def test_child_killed_is_device_gone_then_reopen(ring: Ring) -> None:
    driver = open_driver(f"emulated:{ring.path}")
    await driver.open()
    transport = await driver.open_session()
    pid = driver.child_pid
    assert pid is not None
    os.kill(pid, 9)
    with pytest.raises(DeviceGone):
        with trio.fail_after(10):
            await transport.receive()
    with pytest.raises(DeviceGone):
        await driver.open_session()
    info = await driver.open()  # a new child
    assert info.model == "pedemu" and driver.child_pid != pid
    transport = await driver.open_session()
    async with open_ped_session(transport, rpv=ring.rpv, hsm_serial="HSM-9") as ped:
        await ped.show_message("hello again")
    await driver.aclose()
