"""The emulated PED's output to its host: what goes out in which write, and who writes it.

Theory of operation
-------------------
Encoded frames are queued in wire order and what is queued together goes out in one
write, by one writer task (`DeviceOutput.writer`), except for an operation's answer: the
task that queued it sends the queue itself (`push`) when nothing is being written (one
scheduler pass less per login), shielded from its session's cancellation (a half-written
frame would break the stream), bounded by `SEND_TIMEOUT` and cut short when the
connection goes down; a send that fails or times out hangs the connection up, as the
writer does.

DEVICE_EVENTs (informational only) are held for at most `EVENT_HOLD` seconds so that
they ride with the next frame; an operation's answer goes out *first* and the events
held so far right behind it, in the same write (`deferring`), so that a host can relay
the answer before it parses them (``ped.device.host``, `frames_first`;
docs/protocol/device.md).  A lone event (the PED waiting for a key) still goes out
promptly.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator

import trio

log = logging.getLogger("pedemu")

#: How long a DEVICE_EVENT may wait for a frame to ride with (one write instead of
#: several); short enough that a host's log still shows "waiting for a key" at once.
EVENT_HOLD = 0.03
#: Longest an operation's task may spend writing its answer itself (a host that stops
#: reading); past it the stream is unusable and the connection is closed.
SEND_TIMEOUT = 10.0

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class DeviceOutput:
    """The bytes queued for one host connection (see the module docstring).

    *hang_up* ends the connection (its stream is unusable); *stopping* says whether it
    is going down or the PED is unplugged, when nothing more may be written.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        hang_up: Callable[[], None],
        stopping: Callable[[], bool],
    ) -> None:
        self._stream = stream
        self._hang_up = hang_up
        self._stopping = stopping
        # Encoded output in wire order, written by whoever holds `_send_lock`: the writer
        # task, or an operation's task sending its answer (`push`).
        self._pending: list[bytes] = []
        self._closed = False  # no more output is queued (the connection winds down)
        self._wake = trio.Event()  # the writer has something to do
        self._deferring = False  # output is queued by a task that will `push` it itself
        self._send_lock = trio.Lock()
        self._send_scope: trio.CancelScope | None = None  # around a `push`'s write
        self.writer_done = trio.Event()
        # Encoded DEVICE_EVENTs waiting to ride with the next frame (see EVENT_HOLD).
        self._held: list[bytes] = []
        self._hold_deadline = math.inf
        self._writer_wait: trio.CancelScope | None = None

    # ------------------------------------------------------------------------ queueing
    def hold_event(self, data: bytes) -> None:
        """Queue an encoded DEVICE_EVENT to ride with the next frame (or go alone soon)."""
        self._held.append(data)
        if self._hold_deadline == math.inf:
            self._hold_deadline = trio.current_time() + EVENT_HOLD
            if self._writer_wait is not None:
                self._writer_wait.deadline = self._hold_deadline

    def queue(self, data: bytes) -> None:
        """Queue encoded bytes after the events held so far (the order is the wire's),
        except an operation's answer (`deferring`): it goes first and the operation's
        events right behind it, in the same write."""
        if not self._deferring:
            self.release_held()
        if self._closed:
            log.debug("not sent: the connection is winding down")
            return
        self._pending.append(data)
        if self._deferring:
            self.release_held()
        else:
            self._wake.set()

    def release_held(self) -> None:
        """Queue the held events now."""
        if self._held:
            held, self._held = b"".join(self._held), []
            self._hold_deadline = math.inf
            if self._writer_wait is not None:
                self._writer_wait.deadline = math.inf  # (a `push` may send them: no wake-up)
            if self._closed:
                log.debug("not sent: the connection is winding down")
                return
            self._pending.append(held)

    def close(self) -> None:
        """Queue nothing more; the writer sends what is queued, then ends."""
        self.release_held()
        self._closed = True
        self._wake.set()

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        """Queue without waking the writer: the caller `push`es right after."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    # ------------------------------------------------------------------------- writing
    async def push(self) -> None:
        """Write what is queued from this task when nothing is being written, else leave
        it to the writer (which is then behind the write in progress, so order holds)."""
        if not self._pending:
            return
        if self._send_lock.locked() or self._closed:
            self._wake.set()
            return
        if self._stopping():
            # Going down, or unplugged (the operation saw it before the connection
            # hangs up): nothing more is written, as with a real cable pulled.
            return
        self._send_lock.acquire_nowait()
        try:
            data = self._take()
            with trio.CancelScope(
                deadline=trio.current_time() + SEND_TIMEOUT, shield=True
            ) as scope:
                self._send_scope = scope
                try:
                    await self._stream.send_all(data)
                except _STREAM_ERRORS:
                    self._hang_up()
                finally:
                    self._send_scope = None
            if scope.cancelled_caught:
                self._hang_up()  # timed out or cut short: the stream is unusable
        finally:
            self._send_lock.release()

    def cut_short(self) -> None:
        """Stop a `push` that is writing (the connection is going down)."""
        if self._send_scope is not None:
            self._send_scope.cancel()

    async def writer(self) -> None:
        """The writer task: everything queued so far goes out in one write."""
        try:
            while True:
                if not self._pending:
                    if self._closed:
                        return
                    # Wait for output; held events wait at most until their deadline.
                    with trio.CancelScope(deadline=self._hold_deadline) as wait:
                        self._writer_wait = wait
                        try:
                            await self._wake.wait()
                        finally:
                            self._writer_wait = None
                    self._wake = trio.Event()
                    if not self._pending:
                        self.release_held()  # nothing to ride with: the events go alone
                    continue
                async with self._send_lock:
                    if not self._pending:
                        continue  # a `push` wrote it meanwhile
                    try:
                        await self._stream.send_all(self._take())
                    except _STREAM_ERRORS:
                        self._hang_up()
                        return
        finally:
            self.writer_done.set()

    def _take(self) -> bytes:
        pending, self._pending = self._pending, []
        return pending[0] if len(pending) == 1 else b"".join(pending)
