"""The PED cabled to the HSM: its driver, opened once, and one session per operation.

There is no orange key on that path: the channel runs keyed by
``ped.channel.LOCAL_RPV``, which the PED accepts only in its local mode.  A session is
opened per operation, so a local operation in progress holds the PED's lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from hsm.apiport import HsmApiPort, driver_unavailable, first_error, map_error, passes_through
from hsm.crypto import wipe
from keys.colors import Color
from ped.channel import LOCAL_RPV
from ped.errors import PedError


def local_rpv() -> bytes:
    """The fixed, public RPV of a cabled PED (accepted by a PED only in its local mode)."""
    return bytes(LOCAL_RPV)


class LocalPed:
    """The cabled PED at *uri* (``emulated:...``, ``usb``, ``socket:PATH``)."""

    def __init__(self, uri: str, factory: Callable[[str], Any] | None = None) -> None:
        self.uri = uri
        self._factory = factory
        self._driver: Any = None

    async def aclose(self) -> None:
        if self._driver is not None:
            with contextlib.suppress(Exception):
                await self._driver.aclose()
            self._driver = None

    @contextlib.asynccontextmanager
    async def session(
        self,
        session_args: dict[str, Any],
        *,
        touch: Callable[[], None],
        timeouts: Callable[[], dict[str, int]],
        announce: Callable[[str, Color | None], None],
    ) -> AsyncIterator[HsmApiPort]:
        """One operation's session (*session_args* go to ``open_ped_session``), handed out
        as an `HsmApiPort`."""
        from ped.device import open_driver
        from ped.hsm_api import open_ped_session

        where = f"local PED {self.uri}"
        rpv = bytearray(local_rpv())
        try:
            if self._driver is None or not self._driver.is_open:
                try:
                    factory = self._factory or open_driver
                    self._driver = factory(self.uri)
                    await self._driver.open()
                except PedError as exc:
                    self._driver = None
                    raise driver_unavailable(exc, f"cannot open the {where}") from None
            try:
                transport = await self._driver.open_session()
            except PedError as exc:
                with contextlib.suppress(Exception):
                    await self._driver.aclose()
                self._driver = None
                raise driver_unavailable(exc, f"cannot use the {where}") from None
            try:
                async with open_ped_session(transport, rpv=rpv, **session_args) as ped:
                    yield HsmApiPort(ped, where, touch, timeouts, announce=announce)
            except BaseExceptionGroup as group:
                raise map_error(first_error(group), where) from None
            except PedError as exc:
                if passes_through(exc):
                    raise
                raise map_error(exc, where) from None
            finally:
                with contextlib.suppress(Exception):
                    await transport.aclose()
        finally:
            wipe(rpv)
