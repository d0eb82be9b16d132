"""pedserver's PED event log: one line per PED event, written just after the relay.

The driver reports an event while it dispatches what the PED sent in one write, which
usually holds the operation's answer too: the line is queued and written by `run` on
its next turn, just after the answer was relayed, rather than on the HSM's critical
path.  Lines keep their order; none is dropped (past `EVENT_LINES_MAX` queued, or when
no logger task runs, they are written at once).  An event carries the device's
non-secret metadata only (operation, colour, keyset id, result).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

import attrs
import trio

from ped.device import DeviceEvent, EventKind
from pedserver.links import LinkRecord

log = logging.getLogger("pedserver")

#: PED event log lines that may wait for the logger task before they are written at once.
EVENT_LINES_MAX = 1024

_Line = tuple[int, str, tuple[object, ...]]


class EventLog:
    """Queues the PED's events as log lines and writes them from a task of its own."""

    def __init__(self, link_of_session: Callable[[int], LinkRecord | None]) -> None:
        self._link_of_session = link_of_session
        self._lines: collections.deque[_Line] = collections.deque()
        self._ready = trio.Event()
        self._running = False

    def on_event(self, event: object) -> None:
        """The driver's ``on_event``: queue the log line of a PED event."""
        if not isinstance(event, DeviceEvent):
            return
        if event.kind is EventKind.OP_STARTED and not log.isEnabledFor(logging.DEBUG):
            return  # the common case at info level: nothing to log, nothing to format
        record = self._link_of_session(event.session) if event.session else None
        where = f"link {record.id}" if record is not None else "PED"
        line: _Line
        if event.kind is EventKind.OP_STARTED:
            # The finish line names the operation, its colour and result: one info line
            # per operation (plus one per key presented), not three.
            line = (logging.DEBUG, "%s: PED %s", (where, event))
        elif event.kind is EventKind.OP_FINISHED and record is not None:
            took = (
                f", {trio.current_time() - record.op_started:.1f} s"
                if record.op_started is not None
                else ""
            )
            line = (logging.INFO, "%s: PED %s (operation %d%s)", (where, event, record.ops, took))
        elif event.kind is EventKind.KEY_REFUSED and event.color:
            line = (logging.INFO, "%s: PED %s", (where, refusal_text(event)))
        else:
            line = (logging.INFO, "%s: PED %s", (where, event))
        self._lines.append(line)
        if not self._running or len(self._lines) > EVENT_LINES_MAX:
            self._write()
        else:
            self._ready.set()

    def _write(self) -> None:
        while self._lines:
            level, text, args = self._lines.popleft()
            log.log(level, text, *(a.describe() if isinstance(a, DeviceEvent) else a
                                   for a in args))

    async def run(self) -> None:
        """Write queued lines on each turn until cancelled, then the rest at once."""
        self._running = True
        try:
            while True:
                await self._ready.wait()
                self._ready = trio.Event()
                self._write()
        finally:
            self._running = False
            self._write()


def refusal_text(event: DeviceEvent) -> str:
    """A refused key in words: the colour is the one asked for and the keyset the key's
    presented (an orange key offered for a blue login is not "blue keyset <orange id>")."""
    asked = attrs.evolve(event, keyset="", outcome="", detail="").describe()
    text = asked.replace("key-refused", "key-refused: wanted", 1)
    detail = f" ({event.detail})" if event.detail else ""
    outcome = f", result {event.outcome}" if event.outcome else ""
    presented = f"; the key presented is of keyset {event.keyset}" if event.keyset else ""
    return f"{text}{detail}{outcome}{presented}"
