"""pedserver's deadlines of one link: keepalives, and when the link must end.

Keepalives keep a link alive, never the PED's hold.  The link is closed with
PEER_UNRESPONSIVE when nothing was heard for ``socket_read_rsp_timeout``; with
IDLE_TIMEOUT when no operation happened for its idle timeout (never while one is held
or awaited, never on a peer link) or when it completed no RPV handshake within
``rpv_handshake_timeout`` of its welcome (a link that only said hello must not keep a
slot; not while it holds or waits for the PED, never on a peer link); with
PROTOCOL_ERROR when it holds the PED without sending it an end-to-end frame for
``op_start_timeout`` (an HSM sends at once) or for one operation longer than its hold
bound: the operation timeout (pedo) the hold's OP_BEGIN announced plus `OP_HOLD_GRACE`,
never more than ``max_op_hold``; ``max_op_hold`` alone when OP_BEGIN announced none
(link version 1).

The relay wakes the timer (`LinkRecord.wake_timers`) when a deadline moves: an
operation begins or ends, or the hold's first frame comes; never per frame.
"""

from __future__ import annotations

import itertools
import logging
import math
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ped.link.messages import Keepalive
from ped.wire.types import CloseCode
from pedserver.links import LinkActivity, LinkRecord
from pedserver.settings import Settings

log = logging.getLogger("pedserver")

#: Seconds a hold may outlast the operation timeout its OP_BEGIN announced: the HSM
#: cancels at its timeout and waits a short grace (10 s) for the PED to end the operation.
OP_HOLD_GRACE = 30


class LinkDeadlines:
    """Runs the keepalives and deadlines of each link of one pedserver."""

    def __init__(
        self,
        settings: Settings,
        *,
        close_link: Callable[[LinkRecord, CloseCode, str], Awaitable[None]],
        send: Callable[[LinkRecord, Any], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self._close_link = close_link
        self._send = send
        # The operation timeout each link's current hold announced (None: none).
        self._announced: weakref.WeakKeyDictionary[LinkRecord, int | None] = (
            weakref.WeakKeyDictionary()
        )

    def hold_granted(self, record: LinkRecord, op_timeout: int | None) -> None:
        """*record* holds the PED for an operation whose OP_BEGIN announced *op_timeout*
        (seconds, None if it announced none); logs the bound when it changes."""
        changed = record not in self._announced or self._announced[record] != op_timeout
        self._announced[record] = op_timeout
        if not changed:
            return
        bound = self.hold_limit(record)
        if op_timeout is None:
            log.info("link %d: the client announces no operation timeout; a hold of the PED "
                     "ends after max_op_hold (%d s)", record.id, bound)
        else:
            log.info("link %d: the HSM announces an operation timeout of %d s; a hold of the "
                     "PED ends after %d s", record.id, op_timeout, bound)

    def hold_limit(self, record: LinkRecord) -> int:
        """The longest *record*'s current hold may last once it has sent the PED a frame:
        its announced operation timeout plus a grace, at most ``max_op_hold``."""
        announced = self._announced.get(record)
        if announced is None:
            return self.settings.max_op_hold
        return min(announced + OP_HOLD_GRACE, self.settings.max_op_hold)

    async def run(self, record: LinkRecord) -> None:
        """Keepalives and deadlines of *record* until one ends it (or cancelled)."""
        s = self.settings
        nonce = itertools.count(1)
        next_keepalive = trio.current_time() + s.keepalive_interval
        while True:
            now = trio.current_time()
            idle_at = (
                record.last_activity + record.idle_timeout if record.may_idle_out else math.inf
            )
            dead_at = record.last_heard + s.socket_read_rsp_timeout
            hold_at, hold_limit = self._hold_deadline(record)
            rpv_at = self._handshake_deadline(record)
            if now >= dead_at:
                log.warning("link %d: nothing heard from %s for %d s", record.id, record.peer,
                            s.socket_read_rsp_timeout)
                await self._close_link(
                    record, CloseCode.PEER_UNRESPONSIVE,
                    f"nothing heard from the client for {s.socket_read_rsp_timeout} s",
                )
                return
            if now >= hold_at:
                await self._end_hold(record, hold_limit)
                return
            if now >= rpv_at:
                log.info("link %d from %s (%s): no RPV handshake within %d s; closing it",
                         record.id, record.peer, record.client_name or "unnamed",
                         s.rpv_handshake_timeout)
                await self._close_link(
                    record, CloseCode.IDLE_TIMEOUT,
                    f"no RPV handshake within {s.rpv_handshake_timeout} s of the link's "
                    "opening",
                )
                return
            if now >= idle_at:
                log.info("link %d: idle for %d s", record.id, record.idle_timeout)
                await self._close_link(
                    record, CloseCode.IDLE_TIMEOUT,
                    f"no PED operation for {record.idle_timeout} s",
                )
                return
            if now >= next_keepalive:
                await self._send(record, Keepalive(next(nonce) & 0xFFFFFFFF))
                next_keepalive = now + s.keepalive_interval
            with trio.move_on_at(min(next_keepalive, idle_at, dead_at, hold_at, rpv_at)):
                await record.timers_changed.wait()
            record.timers_changed = trio.Event()

    def hold_bound(self, record: LinkRecord) -> int | None:
        """How long *record*'s current hold of the PED may last in all (seconds from the
        grant; None when it holds none): the operation's bound once its first frame came,
        until then ``op_start_timeout``."""
        if record.op_started is None or not record.holds_ped:
            return None
        return self.hold_limit(record) if record.sent_in_hold else self.settings.op_start_timeout

    def _hold_deadline(self, record: LinkRecord) -> tuple[float, int]:
        """When the link's hold of the PED must end, and the limit that sets it."""
        limit = self.hold_bound(record)
        if limit is None or record.op_started is None:
            return math.inf, 0
        return record.op_started + limit, limit

    def _handshake_deadline(self, record: LinkRecord) -> float:
        """When a standard link that completed no RPV handshake is closed (never while it
        holds or waits for the PED: those have their own bounds)."""
        if (
            record.handshakes
            or not record.idle_applies
            or record.holds_ped
            or record.doing is LinkActivity.WAITING_FOR_PED
        ):
            return math.inf
        return record.welcomed + self.settings.rpv_handshake_timeout

    async def _end_hold(self, record: LinkRecord, limit: int) -> None:
        who = f"link {record.id} from {record.peer} ({record.client_name or 'unnamed'})"
        announced = self._announced.get(record)
        if record.sent_in_hold and (announced is None or limit == self.settings.max_op_hold):
            log.warning("%s held the PED for one operation longer than max_op_hold (%d s); "
                        "closing the link", who, limit)
            text = (f"one operation held the PED longer than {limit} s (pedserver's "
                    "max_op_hold: raise it with the HSM's pedo); connect again")
        elif record.sent_in_hold:
            log.warning("%s held the PED for one operation longer than its announced "
                        "operation timeout (%d s) plus %d s; closing the link",
                        who, announced, OP_HOLD_GRACE)
            text = (f"one operation held the PED longer than {limit} s (the HSM's operation "
                    f"timeout of {announced} s plus {OP_HOLD_GRACE} s); connect again")
        else:
            log.warning("%s held the PED for %d s without sending it anything; closing the "
                        "link", who, limit)
            text = (f"the link held the PED for {limit} s without sending it a frame "
                    "(op_start_timeout); connect again")
        await self._close_link(record, CloseCode.PROTOCOL_ERROR, text)
