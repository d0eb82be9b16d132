"""Hostile or broken peers on the device transport: typed errors, nothing lost, recovery."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from ped.device import DeviceGone, DeviceNotFound
from ped.device.connection import DeviceConnection
from ped.device.emulated.server import EmulatedPed
from ped.device.host import StreamPedDriver
from ped.device.messages import (
    ConnectionRole,
    DeviceErrorCode,
    DeviceErrorMessage,
    Hello,
    Info,
    SessionOpen,
    encode_message,
)
from pedtools.fakes.inprocess import InProcessPedDriver

from .conftest import Ring


class ScriptedDevice(StreamPedDriver):
    """A driver whose 'device' is a coroutine on the other end of a memory stream."""

    def __init__(self, nursery: trio.Nursery, device) -> None:  # type: ignore[no-untyped-def]
        super().__init__("test:")
        self._nursery = nursery
        self._device = device

    async def connect_stream(self) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self._device, theirs)
        return ours


async def test_garbage_instead_of_info(nursery: trio.Nursery) -> None:
    async def device(stream: trio.abc.Stream) -> None:
        await stream.receive_some(1000)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    with pytest.raises(DeviceNotFound, match=r"broke the protocol.*magic"):
        await ScriptedDevice(nursery, device).open()


async def test_silent_device_times_out(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def device(stream: trio.abc.Stream) -> None:
        await trio.sleep_forever()

    with pytest.raises(DeviceNotFound, match="did not answer HELLO"):
        await ScriptedDevice(nursery, device).open()


async def test_device_error_then_reopen(nursery: trio.Nursery) -> None:
    calls = []

    async def device(stream: trio.abc.Stream) -> None:
        calls.append(1)
        conn = DeviceConnection(ConnectionRole.DEVICE)
        conn.receive_data(await stream.receive_some(1000))
        assert isinstance(conn.next_event(), Hello)
        if len(calls) == 1:
            await stream.send_all(conn.send(DeviceErrorMessage(DeviceErrorCode.BUSY, "other host")))
            await stream.aclose()
            return
        await stream.send_all(conn.send(Info(1, "m", "f", "s", "remote")))
        await trio.sleep_forever()

    driver = ScriptedDevice(nursery, device)
    with pytest.raises(DeviceNotFound, match="BUSY: other host"):
        await driver.open()
    assert (await driver.open()).serial == "s"
    await driver.aclose()


async def test_session_refused_by_a_full_ped(ring: Ring, nursery: trio.Nursery) -> None:
    driver = InProcessPedDriver(EmulatedPed(ring.path, max_sessions=1), nursery)
    await driver.open()
    await driver.open_session()
    with pytest.raises(Exception, match="serves at most 1") as info:
        await driver.open_session()
    assert not isinstance(info.value, DeviceGone)
    await driver.aclose()


async def test_ped_survives_a_host_that_breaks_the_protocol(
    ring: Ring, nursery: trio.Nursery
) -> None:
    ped = EmulatedPed(ring.path)
    host, device = trio.testing.memory_stream_pair()
    nursery.start_soon(ped.serve, device)
    # A session before HELLO is a protocol error: the PED says so and hangs up.
    await host.send_all(encode_message(SessionOpen(1)))
    conn = DeviceConnection(ConnectionRole.HOST)
    conn.send(Hello())
    with trio.fail_after(5):
        data = b""
        while chunk := await host.receive_some(1000):
            data += chunk
    conn.receive_data(data)
    error = conn.next_event()
    assert isinstance(error, DeviceErrorMessage) and error.code is DeviceErrorCode.PROTOCOL_ERROR
    # The next host is served normally.
    driver = InProcessPedDriver(ped, nursery)
    assert (await driver.open()).model == "pedemu"
    await driver.aclose()
