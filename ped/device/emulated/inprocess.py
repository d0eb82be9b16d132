"""An emulated PED in this process, reached through a driver (tests and demos only).

`InProcessPedDriver` is a real `ped.device.host.StreamPedDriver` whose stream is one end
of a socket pair; the other end is served by an `EmulatedPed` in the caller's nursery.
Everything above the byte stream runs as in production.  Never use it in a relay: it
puts the key images in the driver's process (the ``emulated:`` driver exists to avoid
exactly that).
"""

from __future__ import annotations

import trio

from ped.device.emulated.server import EmulatedPed
from ped.device.host import StreamPedDriver


class InProcessPedDriver(StreamPedDriver):
    def __init__(self, ped: EmulatedPed, nursery: trio.Nursery, *, uri: str = "inprocess:") -> None:
        super().__init__(uri)
        self.ped = ped
        self._nursery = nursery

    async def _connect(self) -> trio.abc.Stream:
        ours, theirs = trio.socket.socketpair()
        self._nursery.start_soon(self.ped.serve, trio.SocketStream(theirs))
        return trio.SocketStream(ours)
