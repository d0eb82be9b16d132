"""The USB driver through pyusb, over the fake backend hosting the emulated PED."""

from __future__ import annotations

import hmac

import pytest
import trio

from keys.colors import Color
from ped.device import DeviceAccessDenied, DeviceGone, DeviceNotFound, open_driver
from ped.device.emulated.auto import AutoOperator
from ped.device.emulated.server import EmulatedPed
from ped.device.usb import UsbPedDriver
from ped.hsm_api import open_ped_session
from pedtools.fakes.usb import MAX_PACKET, FakeUsbBackend, FakeUsbDevice

from .conftest import Ring


def plug_ped(
    backend: FakeUsbBackend, ped: EmulatedPed, nursery: trio.Nursery, **device_options: object
) -> FakeUsbDevice:
    device = FakeUsbDevice(**device_options)  # type: ignore[arg-type]
    backend.plug(device)
    nursery.start_soon(ped.serve, device.device_stream)
    return device


async def test_read_unplug_replug(ring: Ring, nursery: trio.Nursery) -> None:
    ped = EmulatedPed(ring.path, serial="USB-1")
    nursery.start_soon(AutoOperator(ped.panel, ring.path, pin_file=ring.pin_file).run)
    backend = FakeUsbBackend()
    device = plug_ped(backend, ped, nursery, serial="USB-1")
    driver = UsbPedDriver(backend=backend)
    assert driver.uri == "usb:1209:0001"
    info = await driver.open()
    assert info.serial == "USB-1"
    transport = await driver.open_session()
    async with open_ped_session(transport, rpv=ring.rpv, hsm_serial="HSM-U") as session:
        result = await session.read_secret(Color.BLUE, ring.so_keyset)
        assert hmac.compare_digest(bytes(result.secret), bytes(ring.so_expected()))
    # Each frame went out as one bulk transfer; big ones span several 64-byte packets.
    assert device.out_transfers and max(device.out_transfers) > MAX_PACKET

    backend.unplug(device)
    with pytest.raises(DeviceGone), trio.fail_after(5):
        await transport.receive()
    with pytest.raises(DeviceGone):
        await driver.open_session()
    with pytest.raises(DeviceNotFound, match="no USB PED with VID:PID 1209:0001"):
        await driver.open()

    plug_ped(backend, ped, nursery, serial="USB-1")  # plugged back in
    await driver.open()
    transport = await driver.open_session()
    async with open_ped_session(transport, rpv=ring.rpv, hsm_serial="HSM-U") as session:
        await session.show_message("back")
    assert ped.panel.screen.text == "back"
    await driver.aclose()


async def test_serial_selects_among_several(ring: Ring, nursery: trio.Nursery) -> None:
    backend = FakeUsbBackend()
    for serial in ("A-1", "B-2"):
        ped = EmulatedPed(ring.path, serial=serial)
        plug_ped(backend, ped, nursery, serial=serial)
    with pytest.raises(DeviceNotFound, match="2 PEDs"):
        await UsbPedDriver(backend=backend).open()
    driver = UsbPedDriver(serial="B-2", backend=backend)
    assert (await driver.open()).serial == "B-2"
    await driver.aclose()
    with pytest.raises(DeviceNotFound, match="found: A-1, B-2"):
        await UsbPedDriver(serial="C-3", backend=backend).open()


async def test_access_denied_names_the_udev_rule(ring: Ring, nursery: trio.Nursery) -> None:
    backend = FakeUsbBackend()
    plug_ped(backend, EmulatedPed(ring.path), nursery, deny_access=True)
    with pytest.raises(DeviceAccessDenied) as info:
        await UsbPedDriver(backend=backend).open()
    text = str(info.value)
    assert 'ATTRS{idVendor}=="1209"' in text and "udevadm" in text and "plugdev" in text


async def test_cancelled_read_returns_promptly(ring: Ring, nursery: trio.Nursery) -> None:
    backend = FakeUsbBackend()
    plug_ped(backend, EmulatedPed(ring.path), nursery)
    driver = UsbPedDriver(backend=backend)
    await driver.open()
    transport = await driver.open_session()
    with trio.move_on_after(0.3) as scope:
        await transport.receive()  # nothing comes: the bulk read polls with a short timeout
    assert scope.cancelled_caught
    await transport.aclose()
    await driver.aclose()


def test_usb_uri_forms() -> None:
    d = open_driver("usb:1209:00ff:SN%201")
    assert isinstance(d, UsbPedDriver) and (d.vid, d.pid, d.serial) == (0x1209, 0xFF, "SN 1")
