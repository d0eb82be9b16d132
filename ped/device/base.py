"""The PED driver interface every device driver implements (ARCHITECTURE.md).

A driver stands for one PED device.  `open()` reaches it and returns its `DeviceInfo`;
`open_session()` gives one HSM session on it as a `ped.transport.FrameTransport`; the
sessions of one driver share the PED, and `begin_operation` on any of them is the PED's
lock.  After an unplug every call raises `DeviceGone`; `open()` again once it is back.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import attrs

from ped.transport import FrameTransport


@attrs.frozen
class DeviceInfo:
    """What a PED says about itself (shown by ``pedserver -mode show``)."""

    model: str
    firmware: str
    serial: str
    mode: str


class PedDriver(abc.ABC):
    """One PED device reached through some transport."""

    uri: str
    #: The device's info while open, else None.
    info: DeviceInfo | None = None
    #: Called (synchronously) with every ``ped.device.messages.DeviceEvent`` the PED reports:
    #: non-secret operation metadata for the host's log.
    on_event: Callable[[object], None] | None = None
    #: Set by a host that keeps a receive waiting on every open session (pedserver's
    #: pumps): a session's frame is then handed over before the device events that came
    #: behind it in the same read are parsed; those follow on the next receive, or when a
    #: session or the driver closes.  Off, every frame of a read is parsed and dispatched
    #: (`on_event` called) before `receive` returns.
    frames_first: bool = False

    @abc.abstractmethod
    async def open(self) -> DeviceInfo:
        """Reach the device; `DeviceNotFound`, `DeviceAccessDenied`.  Reopens after unplug."""

    @abc.abstractmethod
    async def open_session(self) -> FrameTransport:
        """One HSM session on the PED; `DeviceGone` if the device went away."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close every session and release the device; idempotent."""

    @property
    def is_open(self) -> bool:
        return self.info is not None

    async def __aenter__(self) -> PedDriver:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
