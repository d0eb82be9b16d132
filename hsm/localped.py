"""The PED cabled to the HSM: its driver, opened once, and one session per operation.

Normally no orange key on that path: the channel runs keyed by ``ped.channel.LOCAL_RPV``,
which the PED accepts only in its local mode (the operator's YES to "Without an orange
key?").  An operator who answers NO presents the orange key; an HSM that has an RPV then
keys the session with it (PROTOCOL.md 3.7).  A session is opened per operation, so a
local operation in progress holds the PED's lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from hsm.apiport import HsmApiPort, driver_unavailable, first_error, map_error, passes_through
from hsm.crypto import wipe
from hsm.errors import PedUnavailable
from keys.colors import Color
from ped.channel import LOCAL_RPV
from ped.channel.errors import RpvMismatch
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
        hsm_rpv: Callable[[], bytearray | None] = lambda: None,
    ) -> AsyncIterator[HsmApiPort]:
        """One operation's session (*session_args* go to ``open_ped_session``), handed out
        as an `HsmApiPort`.

        The channel is keyed by ``LOCAL_RPV`` (the PED's YES to "Without an orange key?").
        If the PED answers NO it reads the orange key and keys with its RPV, so the first
        handshake fails as an RPV mismatch; an HSM that has an RPV (*hsm_rpv*) then keys
        a second handshake with it, for which the operator answers NO again and presents
        the orange key (an HSM without one reports the mismatch)."""
        where = f"local PED {self.uri}"
        waited = session_args.get("busy_wait")  # for a busy PED's refusal: how long
        rpv = bytearray(local_rpv())
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    ped = await self._handshake(stack, session_args, rpv, where)
                except LocalRpvMismatch:
                    own = hsm_rpv()
                    if own is None:
                        raise PedUnavailable(
                            f"the {where} was answered NO to \"Without an orange key?\" but "
                            "this HSM has no Remote PED Vector to check an orange key against "
                            "(not counted): answer YES on the PED cabled to the HSM"
                        ) from None
                    stack.callback(wipe, own)
                    ped = await self._handshake(stack, session_args, own, where)
                yield HsmApiPort(ped, where, touch, timeouts, announce=announce,
                                 busy_wait=waited)
        except BaseExceptionGroup as group:
            raise map_error(first_error(group), where, waited=waited) from None
        except PedError as exc:
            if passes_through(exc):
                raise
            raise map_error(exc, where, waited=waited) from None
        finally:
            wipe(rpv)

    async def _handshake(
        self,
        stack: contextlib.AsyncExitStack,
        session_args: dict[str, Any],
        rpv: bytearray,
        where: str,
    ) -> Any:
        """A new driver session keyed by *rpv*, entered on *stack* (closed with it)."""
        from ped.device import open_driver
        from ped.hsm_api import open_ped_session

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
        stack.push_async_callback(_close_quietly, transport)
        try:
            opened = open_ped_session(transport, rpv=rpv, **session_args)
            return await stack.enter_async_context(opened)
        except BaseExceptionGroup as group:
            raise _mapped(first_error(group), where) from None
        except PedError as exc:
            if passes_through(exc):
                raise
            raise _mapped(exc, where) from None


async def _close_quietly(transport: Any) -> None:
    with contextlib.suppress(Exception):
        await transport.aclose()


class LocalRpvMismatch(PedUnavailable):
    """The local handshake failed on the RPV: the PED keyed with an orange key's RPV."""


def _mapped(exc: BaseException, where: str) -> BaseException:
    """`map_error`, but an RPV mismatch as `LocalRpvMismatch` so that the session rekeys."""
    mapped = map_error(exc, where)
    if isinstance(exc, RpvMismatch) and isinstance(mapped, PedUnavailable):
        return LocalRpvMismatch(mapped.message)
    return mapped
