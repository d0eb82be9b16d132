"""device.md: the DEVICE_EVENTs of a local YES handshake, in order (issue 19, 4.8)."""

from __future__ import annotations

import trio

from ped.channel import LOCAL_RPV
from ped.device.emulated.auto import AutoOperator
from ped.device.emulated.server import EmulatedPed
from ped.device.messages import DeviceEvent, EventKind
from ped.hsm_api import open_ped_session
from pedtools.fakes.inprocess import InProcessPedDriver

from .conftest import Ring


async def test_local_yes_event_sequence(ring: Ring, nursery: trio.Nursery) -> None:
    ped_device = EmulatedPed(ring.path, mode="local")
    nursery.start_soon(AutoOperator(ped_device.panel, ring.path).run)
    driver = InProcessPedDriver(ped_device, nursery)
    await driver.open()
    events: list[DeviceEvent] = []
    driver.on_event = events.append
    async with open_ped_session(
        await driver.open_session(), rpv=bytes(LOCAL_RPV), hsm_serial="L-1"
    ):
        pass
    await driver.aclose()
    seen = [(e.kind, e.color, e.detail, e.outcome) for e in events]
    assert seen[:3] == [
        (EventKind.OP_STARTED, 0, "local-connect", ""),
        (EventKind.OP_FINISHED, 0, "local-connect", "ok"),
        (EventKind.HANDSHAKE, 6, "hsm L-1", "ok"),
    ]
