"""The PED lock: one operation at a time across the sessions of one driver's PED."""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from ped.device.errors import PedBusy
from ped.errors import LocalProtocolError


class PedLock:
    """Held by the session whose operation the PED serves (`begin_operation`)."""

    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._owner: object | None = None
        self._free = trio.Event()
        self._free.set()

    async def acquire(self, owner: object, wait: float, check: Callable[[], None]) -> None:
        """Take the lock for *owner*, waiting at most *wait* seconds (`PedBusy` then);
        *check* runs after each wait and raises if the owner can no longer use the PED."""
        if self._owner is owner:
            raise LocalProtocolError("this session already holds the PED; end_operation first")
        deadline = trio.current_time() + max(wait, 0.0) if math.isfinite(wait) else math.inf
        while self._owner is not None:
            if trio.current_time() >= deadline:
                raise PedBusy(
                    f"{self._uri}: the PED is busy with another operation; "
                    "try again when it is free"
                )
            free = self._free
            with trio.move_on_at(deadline):
                await free.wait()
            check()
        self._owner = owner
        self._free = trio.Event()

    def release(self, owner: object) -> None:
        """Give the lock back if *owner* holds it."""
        if self._owner is owner:
            self.release_any()

    def release_any(self) -> None:
        """Give the lock back whoever holds it (the device is gone)."""
        self._owner = None
        self._free.set()
