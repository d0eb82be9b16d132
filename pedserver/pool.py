"""A pool of PEDs behind one pedserver: each link's PED session goes to the least busy PED.

Theory of operation
-------------------
`PedPool` is a `ped.device.PedDriver` made of several member drivers (``--device`` given
more than once).  pedserver does not know the difference: it opens one session per link
(at the link's first operation) and that session's ``begin_operation`` is the lock of the
PED it lives on.  The pool gives each new session to the open member with the fewest open
sessions (ties: the first in ``--device`` order), so K links on K PEDs each get their own
PED and never wait for one another.

* `open()` opens the first member that can be opened (a pool of hundreds of emulated
  PEDs would not start within pedserver's open timeout); the others are opened when a
  session first needs them.  The pool is open while at least one member is
  (`DeviceNotFound` naming each problem when none can be).  Its `DeviceInfo` is the
  first open member's.
* Sessions are wrapped so that their ids are unique across the pool, and device events
  are forwarded with the pool's session id, so pedserver's log names the right link.
* A member that goes away (`DeviceGone` from one of its sessions) fails only the links
  on it; the next session that picks it opens it again, or takes another member.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import attrs
import trio

from ped.device import DeviceEvent, DeviceInfo, PedDriver
from ped.device.errors import DeviceError, DeviceNotFound
from ped.transport import FrameTransport, TransportClosed
from ped.wire.framing import Frame

#: Most PEDs one pedserver drives (each is a USB device or an emulated PED process).
MAX_POOL = 1024


class PedPool(PedDriver):
    """Several PEDs served as one device (see the module docstring)."""

    def __init__(self, members: Sequence[PedDriver]) -> None:
        if not members:
            raise ValueError("a PED pool needs at least one device")
        if len(members) > MAX_POOL:
            raise ValueError(f"a PED pool holds at most {MAX_POOL} devices, not {len(members)}")
        self.members = list(members)
        self.uri = " ".join(m.uri for m in self.members)
        self.info: DeviceInfo | None = None
        self.on_event = None
        self._load = [0] * len(self.members)
        self._ids = itertools.count(1)
        # member index, member session id -> pool session id (for device events)
        self._pool_ids: dict[tuple[int, int], int] = {}
        for index, member in enumerate(self.members):
            member.on_event = lambda event, index=index: self._forward(index, event)

    def __repr__(self) -> str:
        return f"PedPool({len(self.members)} PEDs)"

    @property
    def frames_first(self) -> bool:
        return all(m.frames_first for m in self.members)

    @frames_first.setter
    def frames_first(self, value: bool) -> None:
        for member in self.members:
            member.frames_first = value

    async def open(self) -> DeviceInfo:
        problems: list[str] = []
        for member in self.members:
            if member.is_open:
                assert member.info is not None
                self.info = member.info
                return self.info
        for member in self.members:
            try:
                await member.open()
            except (DeviceError, TransportClosed, OSError) as exc:
                problems.append(str(exc) or type(exc).__name__)
                continue
            assert member.info is not None
            self.info = member.info
            return self.info
        raise DeviceNotFound(f"no PED of the pool could be opened: {'; '.join(problems)}")

    async def open_session(self) -> FrameTransport:
        # Least loaded first; among equals an open PED before one still to be opened.
        order = sorted(range(len(self.members)),
                       key=lambda i: (self._load[i], not self.members[i].is_open, i))
        problems: list[str] = []
        for index in order:
            member = self.members[index]
            self._load[index] += 1  # reserved while it opens, so others pick another
            try:
                if not member.is_open:
                    await member.open()
                inner = await member.open_session()
            except (DeviceError, TransportClosed, OSError) as exc:
                self._load[index] -= 1
                problems.append(str(exc) or type(exc).__name__)
                continue
            except BaseException:
                self._load[index] -= 1
                raise
            session = PoolSession(self, index, inner, next(self._ids))
            inner_id = getattr(inner, "id", None)
            if isinstance(inner_id, int):
                self._pool_ids[(index, inner_id)] = session.id
            return session
        if not self.is_open:
            self.info = None
        raise DeviceNotFound(f"no PED of the pool could open a session: {'; '.join(problems)}")

    async def aclose(self) -> None:
        async with trio.open_nursery() as nursery:
            for member in self.members:
                nursery.start_soon(member.aclose)
        self.info = None

    @property
    def is_open(self) -> bool:
        return any(m.is_open for m in self.members)

    def _released(self, session: PoolSession) -> None:
        self._load[session.member] -= 1
        inner_id = getattr(session.inner, "id", None)
        if isinstance(inner_id, int):
            self._pool_ids.pop((session.member, inner_id), None)

    def _forward(self, index: int, event: object) -> None:
        if self.on_event is None:
            return
        if isinstance(event, DeviceEvent) and event.session:
            pool_id = self._pool_ids.get((index, event.session), 0)
            event = attrs.evolve(event, session=pool_id)
        self.on_event(event)


class PoolSession(FrameTransport):
    """A member's session under a pool-wide id; everything else is the member's."""

    def __init__(self, pool: PedPool, member: int, inner: FrameTransport, session_id: int):
        self.pool = pool
        self.member = member
        self.inner = inner
        self.id = session_id
        self._released = False

    def __repr__(self) -> str:
        return f"<PoolSession {self.id} on PED {self.member + 1} of the pool>"

    async def send(self, frame: Frame) -> None:
        await self.inner.send(frame)

    async def receive(self) -> Frame:
        return await self.inner.receive()

    async def begin_operation(self, *, wait: float = 0.0) -> None:
        await self.inner.begin_operation(wait=wait)

    async def end_operation(self) -> None:
        await self.inner.end_operation()

    async def aclose(self) -> None:
        try:
            # First: closing hands over the PED's last events, still under this id.
            await self.inner.aclose()
        finally:
            if not self._released:
                self._released = True
                self.pool._released(self)
