"""Driver interface: URIs, the PED lock across sessions, the import boundary."""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio
import trio.testing

from ped.device import BadDeviceUri, DeviceNotOpen, PedBusy, open_driver
from ped.device.emulated.server import EmulatedPed
from ped.device.socket_driver import SocketPedDriver
from ped.device.subprocess_driver import SubprocessPedDriver
from ped.device.uri import parse_emulated, parse_usb
from ped.errors import LocalProtocolError
from ped.transport import FrameTransport, TransportClosed
from ped.wire.framing import Frame
from pedtools.fakes.inprocess import InProcessPedDriver

from .conftest import Ring


def test_uris() -> None:
    d = open_driver("emulated:/k?operator=script:/s.toml&pin-file=/p&mode=local")
    assert isinstance(d, SubprocessPedDriver)
    assert d.options == ["--operator", "script:/s.toml", "--pin-file", "/p", "--mode", "local"]
    assert parse_emulated("emulated:/a%20b") == ("/a b", [])
    assert parse_emulated("emulated:d?m=2&n=3&pin=yes&duplicates=1&reuse=no")[1] == [
        "--auto-m", "2", "--auto-n", "3", "--auto-pin", "yes", "--auto-duplicates", "1",
        "--auto-reuse", "no",
    ]  # fmt: skip
    assert isinstance(open_driver("socket:/run/ped.sock"), SocketPedDriver)
    assert parse_usb("usb") == (0x1209, 0x0001, None)
    assert parse_usb("usb:0x1209:0x0002") == (0x1209, 2, None)
    assert parse_usb("usb:1209:0001:ABC") == (0x1209, 1, "ABC")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("emulated:", "keyring directory"),
        ("emulated:/k?color=red", "unknown option 'color'"),
        ("emulated:/k?operator=", "needs a value"),
        ("socket:", "socket path"),
        ("usb:zz:01", "hexadecimal"),
        ("usb:1209", "usb:VID:PID"),
        ("usb:12345:1", "16-bit"),
        ("serial:/dev/ttyS0", "unknown scheme"),
    ],
)
def test_bad_uris(uri: str, message: str) -> None:
    with pytest.raises(BadDeviceUri, match=message):
        open_driver(uri)


async def test_use_before_open() -> None:
    with pytest.raises(DeviceNotOpen):
        await open_driver("socket:/nowhere").open_session()


async def test_ped_lock_is_shared_by_the_sessions_of_a_driver(
    ring: Ring, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    driver = InProcessPedDriver(EmulatedPed(ring.path), nursery)
    await driver.open()
    a = await driver.open_session()
    b = await driver.open_session()
    assert isinstance(a, FrameTransport)
    await a.begin_operation()
    with pytest.raises(LocalProtocolError):
        await a.begin_operation()
    with pytest.raises(PedBusy):
        await b.begin_operation(wait=0)
    start = trio.current_time()
    with pytest.raises(PedBusy):
        await b.begin_operation(wait=30)
    assert trio.current_time() - start == pytest.approx(30)

    async def release_later() -> None:
        await trio.sleep(5)
        await a.end_operation()

    nursery.start_soon(release_later)
    await b.begin_operation(wait=60)  # gets it when a lets go
    await a.aclose()
    await b.aclose()  # closing the holder releases the PED
    c = await driver.open_session()
    await c.begin_operation()
    with pytest.raises(LocalProtocolError, match="end-to-end"):
        await c.send(Frame(0x35, b""))
    await driver.aclose()
    with pytest.raises(TransportClosed):
        await c.receive()
    with pytest.raises(DeviceNotOpen):
        await driver.open_session()
    await driver.open()  # a closed driver opens again
    await driver.aclose()


def test_relay_side_modules_import_nothing_that_reads_keys() -> None:
    code = (
        "import sys, ped.device, ped.device.uri, ped.device.host, ped.device.socket_driver, "
        "ped.device.subprocess_driver, ped.device.usb, ped.device.messages, ped.device.connection;"
        "bad = [m for m in sys.modules if m == 'keys' or m.startswith(('keys.', "
        "'ped.channel', 'ped.ops', 'ped.hsm_api', 'ped.device.emulated'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
