"""An emulated PED in this process, reached through a driver (tests and demos only).

`InProcessPedDriver` is a real `ped.device.host.StreamPedDriver` whose stream is one end
of an in-memory stream pair; the other end is served by an `EmulatedPed` in the caller's nursery.
Everything above the byte stream runs as in production.  Never use it in a relay: it
puts the key images in the driver's process (the ``emulated:`` driver exists to avoid
exactly that).
"""

from __future__ import annotations

import trio
import trio.testing

from ped.device.emulated.server import EmulatedPed
from ped.device.host import StreamPedDriver


class InProcessPedDriver(StreamPedDriver):
    def __init__(self, ped: EmulatedPed, nursery: trio.Nursery, *, uri: str = "inprocess:") -> None:
        super().__init__(uri)
        self.ped = ped
        self._nursery = nursery

    async def connect_stream(self) -> trio.abc.Stream:
        # Memory streams, not a socket pair: no real I/O, so trio's MockClock can jump
        # through PED-key timeouts in tests.
        ours, theirs = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self.ped.serve, theirs)
        return ours
