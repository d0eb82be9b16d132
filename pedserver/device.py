"""pedserver's PED: opening it, retrying while it is absent, noticing when it goes away."""

from __future__ import annotations

import logging

import trio

from ped.device import DeviceInfo, PedDriver
from ped.device.errors import DeviceError
from ped.link.messages import DeviceSummary
from ped.transport import TransportClosed

log = logging.getLogger("pedserver")

#: How often an absent PED is looked for again.
DEVICE_RETRY_INTERVAL = 5.0
#: How long pedserver waits for the PED to open.
OPEN_TIMEOUT = 30
#: How long stopping waits for the driver to close.
CLOSE_GRACE = 2.0


class DeviceWatch:
    """The one PED (or pool) pedserver serves, and what is known about it."""

    def __init__(self, driver: PedDriver, uri: str) -> None:
        self.driver = driver
        self.uri = uri
        self.info: DeviceInfo | None = None
        self.problem = "not opened yet"
        self._lost = trio.Event()

    def text(self) -> str:
        """The PED's state in one phrase, for the log."""
        info = self.info
        if info is None:
            return f"not connected: {self.problem}"
        return f"connected, {info.model} firmware {info.firmware} serial {info.serial}"

    def summary(self) -> DeviceSummary:
        """What a link welcome says about the PED."""
        info = self.info
        if info is None:
            return DeviceSummary(False)
        return DeviceSummary(
            True, info.model[:64], info.firmware[:64], info.serial[:64], info.mode[:64]
        )

    async def try_open(self, *, first: bool = False) -> bool:
        """Open the PED; False (logged once per new problem) when it cannot be."""
        try:
            with trio.fail_after(OPEN_TIMEOUT):
                self.info = await self.driver.open()
        except (DeviceError, TransportClosed, trio.TooSlowError, OSError) as exc:
            problem = (
                str(exc)
                if not isinstance(exc, trio.TooSlowError)
                else f"no answer in {OPEN_TIMEOUT} s"
            )
            if first or problem != self.problem:
                log.warning("PED %s is not available: %s", self.uri, problem)
            self.info = None
            self.problem = problem
            return False
        self.problem = ""
        log.info("PED %s", self.text())
        return True

    def mark_gone(self, why: str) -> None:
        """The PED went away: the watch looks for it again."""
        if self.info is not None:
            log.warning("PED went away: %s", why)
        self.info = None
        self.problem = why
        self._lost.set()

    async def watch(self) -> None:
        """Reopen the PED whenever it is absent, until cancelled."""
        while True:
            if self.info is None:
                await self.try_open()
                await trio.sleep(DEVICE_RETRY_INTERVAL)
            else:
                await self._lost.wait()
                self._lost = trio.Event()

    async def close(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_GRACE):
            try:
                await self.driver.aclose()
            except Exception as exc:
                log.warning("closing the PED driver failed: %s", type(exc).__name__)
