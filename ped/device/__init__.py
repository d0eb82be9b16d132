"""PED device drivers: the driver interface, device URIs, the device transport.

The emulated PED lives in ``ped.device.emulated``, which this package never imports:
the relays import ``ped.device`` and must stay free of anything that reads key images.
"""

from ped.device.base import DeviceInfo, PedDriver
from ped.device.errors import (
    DeviceAccessDenied,
    DeviceError,
    DeviceGone,
    DeviceNotFound,
    DeviceNotOpen,
    PedBusy,
)
from ped.device.messages import DeviceEvent, EventKind
from ped.device.uri import BadDeviceUri, open_driver

__all__ = [
    "BadDeviceUri",
    "DeviceAccessDenied",
    "DeviceError",
    "DeviceEvent",
    "DeviceGone",
    "DeviceInfo",
    "DeviceNotFound",
    "DeviceNotOpen",
    "EventKind",
    "PedBusy",
    "PedDriver",
    "open_driver",
]
