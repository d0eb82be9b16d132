"""Errors of PED device drivers.

All are `ped.errors.PedError`s.  `DeviceGone` is a `ped.transport.TransportClosed`, so an
HSM session that loses its PED sees the same retriable error whatever the cause; the
driver can be `open()`ed again once the device is back.

Translated where: pedserver tells the link's HSM with a Close (DEVICE_GONE, the
``close_code`` read by ``ped.link.errors.close_code_for``); a local HSM maps them in one
place, ``hsm.apiport``.
"""

from __future__ import annotations

from typing import ClassVar

from ped.errors import PedError
from ped.transport import PedBusy, TransportClosed, TransportError
from ped.wire.types import CloseCode

__all__ = [
    "DeviceAccessDenied",
    "DeviceError",
    "DeviceGone",
    "DeviceNotFound",
    "DeviceNotOpen",
    "PedBusy",
    "TransportClosed",
    "TransportError",
]


class DeviceError(PedError):
    """A PED device could not be used."""

    #: What pedserver tells a link whose PED cannot be used (as for `DeviceGone`).
    close_code: ClassVar[CloseCode] = CloseCode.DEVICE_GONE


class DeviceNotFound(DeviceError):
    """No PED answers at the place the device URI names."""


class DeviceAccessDenied(DeviceError):
    """A PED is there but this process may not open it (permissions)."""


class DeviceNotOpen(DeviceError):
    """The driver was used before `open()` (or after `aclose()`)."""


class DeviceGone(TransportClosed):
    """The PED went away (unplugged, process ended, connection lost); `open()` again."""
