"""Which PED the HSM uses: the local one, or the remote one through pedclient.

Theory of operation
-------------------
The HSM has at most two PEDs:

* a **local** PED, cabled to it (``pedhsm mode start --local-ped URI``), reached through a
  ``ped.device`` driver.  The channel runs keyed by ``ped.channel.LOCAL_RPV``, which the
  PED accepts only in its local mode (or by the HSM's RPV if its operator says NO);
* a **remote** PED, reached by ``hsm ped connect --ip A --port P`` through pedclient's
  socket (``--pedclient PATH``), with the end-to-end channel keyed by the HSM's RPV: the
  remote PED asks for the orange key once, at connect.  The session is kept open until
  ``hsm ped disconnect``, the idle timeout (``rped``), or the link dropping.

The HSM watches an open remote link (`hsm.remotelink.RemoteLink`, the link's life from
connect to its end): the moment pedserver or pedclient closes it, the router knows who
and why, ``hsm ped show`` says so, and the audit log records it.  A link that ended
without ``hsm ped disconnect`` is *lost* (`hsm.linkloss`): until the administrator
reconnects or disconnects, every PED operation is refused with the cause and the fix;
it never falls back to the local PED silently.  A session that an operation leaves
unusable (its secure channel broke: a SEALED frame failed authentication, an answer broke
the protocol; `ped.hsm_api.session_end` says why) is never used again (PROTOCOL.md 3.6):
the HSM ends its link at once, so it is lost the same way, by this HSM, with that why.
A PED busy with another HSM's operation breaks nothing (none of the request reached it,
and the session sends it first next time): the command is refused
(`hsm.apiport.PedBusyRefusal`, not counted) and the link stays.

`PedRouter.session` picks: the remote PED while it is connected (as on a Luna, the local
PED is ignored while remote is active), else the lost link's refusal, else the local PED,
else `PedUnavailable` saying how to get one.  ``hsm ped vector init`` asks for
``local_only`` (an RPV is imprinted only through a cabled PED).  A local session is
opened per operation: a local operation in progress holds the PED's lock, so a remote
one waits (or is told the PED is busy).

Each session is handed out as an `hsm.apiport.HsmApiPort`.  Errors of ``ped`` become
the HSM's in ``hsm.apiport`` only (`map_error`, `driver_unavailable`): what the HSM
counts and what it does not.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

from hsm.apiport import HsmApiPort, PedLinkLost, describe_notice
from hsm.errors import PedUnavailable
from hsm.linkloss import LinkLoss, wall_text
from hsm.localped import LocalPed
from hsm.remotelink import RemoteLink
from keys.colors import Color
from ped.hsm_api.session_end import session_end
from ped.link.errors import LinkEnd

log = logging.getLogger("pedhsm.ped")
BUSY_WAIT = 15.0
#: The fix for a session that broke: a new one, a new handshake (PROTOCOL.md 3.6)
NEW_SESSION = "run `hsm ped connect` to open a new session with the orange key"


class PedRouter:
    """Local and remote PED access for one HSM (see the module docstring)."""

    def __init__(
        self,
        *,
        local_uri: str | None,
        pedclient_socket: str | None,
        serial: str,
        timeouts: Callable[[], dict[str, int]],
        on_drop: Callable[[LinkLoss], None],
        driver_factory: Callable[[str], Any] | None = None,
        now: Callable[[], float] = time.time,
        hsm_rpv: Callable[[], bytearray | None] = lambda: None,
    ) -> None:
        self.local_uri = local_uri
        #: A copy of the HSM's RPV, or None: keys a local session the operator answered NO
        self.hsm_rpv = hsm_rpv
        self._local = LocalPed(local_uri or "", driver_factory)
        self.serial = serial
        self._timeouts = timeouts
        self._on_drop = on_drop
        self._nursery: trio.Nursery | None = None
        self._last_use = 0.0
        self._notify: Callable[[str], None] | None = None
        self._asking: Color | None = None  # the colour of the operation in progress
        self._now = now
        #: the remote link that ended without `hsm ped disconnect` (see hsm.linkloss)
        self.lost: LinkLoss | None = None
        #: the remote link's life (`hsm.remotelink`)
        self.link = RemoteLink(
            pedclient_socket=pedclient_socket, serial=lambda: self.serial, timeouts=timeouts,
            session_args=self._session_args, on_open=self._opened, on_lost=self._lose,
            busy_wait=BUSY_WAIT, now=now,
        )  # fmt: skip

    @property
    def pedclient_socket(self) -> str | None:
        return self.link.pedclient_socket

    @pedclient_socket.setter
    def pedclient_socket(self, path: str | None) -> None:
        self.link.pedclient_socket = path

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._idle_watch)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                with trio.CancelScope(shield=True):
                    await self.disconnect()
                    await self._local.aclose()

    def _touch(self) -> None:
        self._last_use = trio.current_time()

    async def _idle_watch(self) -> None:
        while True:
            await trio.sleep(1.0)
            link = self.link
            if link.session is None or link.lock.locked():
                continue
            if link.peer:
                continue  # REFERENCE: the idle timeout does not apply to PED-initiated links
            idle = trio.current_time() - self._last_use
            rped = self._timeouts()["rped"]
            if idle >= rped:
                await link.end(
                    LinkEnd("this HSM", f"idle timeout: no PED operation for rped {rped} s",
                            f"the HSM's remote PED idle timeout (rped) is {rped} s")
                )

    def which(self, *, local_only: bool = False) -> str:
        """The PED a session would use: ``remote PED A:P (SERIAL)`` or ``local PED`` (as
        `_pick` chooses)."""
        if local_only or self.link.session is None:
            return "local PED"
        info = self.link.session.ped_info
        serial = f" ({info.serial})" if info is not None and info.serial else ""
        return f"remote PED {self.link.address}{serial}"

    def status(self) -> dict[str, Any]:
        connected = self.link.is_open()
        idle_left = None
        if connected and not self.link.peer:
            left = self._timeouts()["rped"] - (trio.current_time() - self._last_use)
            idle_left = max(0, math.ceil(left))
        lost = self.lost
        remote = connected or lost is not None
        since = self.link.since if connected else None
        return {
            "mode": "remote" if remote else ("local" if self.local_uri else "none"),
            "local": self.local_uri,
            "address": self.link.address if connected else (lost and lost.address),
            "connected": connected,
            "pedclient": self.pedclient_socket,
            "idle_left": idle_left,
            "since": None if since is None else wall_text(since),
            "lost": None if lost is None else lost.as_status(),
        }

    # ------------------------------------------------------------------ sessions

    def _session_args(self) -> dict[str, Any]:
        t = self._timeouts()
        return {
            "hsm_serial": self.serial,
            "key_timeout": t["pedk"],
            "op_timeout": t["pedo"],
            "on_notice": self._on_notice,
            # A PED still finishing another operation (or a cancelled one) is waited for a
            # little before the command says the PED is busy.
            "busy_wait": BUSY_WAIT,
        }

    def _on_notice(self, notice: Any) -> None:
        notify = self._notify
        if notify is not None:
            text = describe_notice(notice, self._asking, self._timeouts()["pedk"])
            if text:
                notify(text)

    def _announce(self, text: str, color: Color | None) -> None:
        """What the HSM is about to ask of the PED, before the PED's own notices."""
        self._asking = color
        if self._notify is not None:
            self._notify(text)

    @contextlib.asynccontextmanager
    async def session(
        self, *, local_only: bool = False, notify: Callable[[str], None] | None = None
    ) -> AsyncIterator[HsmApiPort]:
        """The PED for one command; *notify* receives the PED's progress notices."""
        self._notify = notify
        try:
            async with self._pick(local_only=local_only) as port:
                yield port
        finally:
            self._notify = None

    @contextlib.asynccontextmanager
    async def _pick(self, *, local_only: bool) -> AsyncIterator[HsmApiPort]:
        link = self.link
        if not local_only and link.session is not None:
            async with link.lock:
                if link.session is None:
                    raise self._lost_refusal()
                try:
                    where = f"remote PED {link.address}"
                    # A busy PED refuses the command (`PedBusyRefusal`) but leaves the
                    # session usable: `_end_if_dead` below keeps the link then.
                    yield HsmApiPort(link.session, where, self._touch, self._timeouts,
                                     announce=self._announce, busy_wait=BUSY_WAIT,
                                     keeps_link=True)
                except PedLinkLost as exc:
                    await link.end(
                        LinkEnd("this HSM", "the PED session broke during an operation",
                                exc.message)
                    )
                    if self.lost is not None:
                        raise self._refusal_after(exc, PedLinkLost) from None
                    raise
                except Exception as exc:
                    await self._end_if_dead(exc)
                    raise
                except trio.Cancelled as exc:
                    # The command went away mid-operation (its shell was killed): a PED
                    # that never ended the cancelled operation left the session broken,
                    # and `show` must say why now, not at the next login.
                    with trio.CancelScope(shield=True):
                        await self._end_if_dead(exc, refuse=False)
                    raise
            return
        if not local_only and self.lost is not None:
            raise self._lost_refusal()
        if not self.local_uri:
            if local_only:
                raise PedUnavailable(
                    "this needs a PED cabled to the HSM: restart with "
                    "`pedhsm mode start --local-ped URI`"
                )
            raise PedUnavailable(
                "no PED: start pedhsm with --local-ped URI, or connect a remote PED with "
                "`hsm ped connect --ip A --port 1503`"
            )
        async with self._local.session(
            self._session_args(), touch=self._touch, timeouts=self._timeouts,
            announce=self._announce, hsm_rpv=self.hsm_rpv,
        ) as port:
            yield port

    # ------------------------------------------------------------------ remote link

    async def connect(
        self,
        host: str,
        port: int,
        rpv: bytearray,
        notify: Callable[[str], None],
        *,
        peer: str | None = None,
    ) -> str:
        if self._nursery is None:
            raise PedUnavailable("the HSM is shutting down")
        if not self.pedclient_socket:
            raise PedUnavailable(
                "no pedclient: restart pedhsm with --pedclient PATH (pedclient's socket)"
            )
        if self.link.is_open():
            raise PedUnavailable(
                f"already connected to the remote PED {self.link.address}; "
                "run `hsm ped disconnect` first to connect elsewhere"
            )
        await self.disconnect(forget_loss=False)  # a link that died unnoticed: tidy up
        return await self.link.open(self._nursery, host, port, rpv, peer)

    def _opened(self) -> None:
        self.lost = None
        self._touch()

    def _lose(self, address: str, end: LinkEnd) -> None:
        loss = LinkLoss(address, end, self._now())
        self.lost = loss
        log.warning("remote PED %s: link lost: %s (%s)", address, loss.sentence, end.detail)
        self._on_drop(loss)

    def _lost_refusal(self) -> PedUnavailable:
        if self.lost is None:
            return PedUnavailable("the remote PED link dropped; run `hsm ped connect`")
        return PedUnavailable(self.lost.refusal(local_ped=bool(self.local_uri)))

    def _refusal_after(self, error: Exception, kind: type[PedUnavailable]) -> PedUnavailable:
        """The lost link's refusal, and what the operation that lost it met."""
        return kind(f"{self._lost_refusal().message}; the operation failed: {error}",
                    outcome=getattr(error, "outcome", ""))

    async def _end_if_dead(self, error: BaseException, *, refuse: bool = True) -> None:
        """A session that an operation left unusable (its secure channel broke:
        PROTOCOL.md 3.6) is a lost link from now on, not at the next operation: end the
        link (`hsm ped show` says why) and (*refuse*) refuse the operation with the why
        and the fix."""
        session = self.link.session
        if session is None:  # the link ended by itself meanwhile: already lost
            return
        # hsm.apiport raises the HSM's error in the handler of the ped error: its context
        cause = error if isinstance(error, trio.Cancelled) else error.__context__ or error
        end = session_end(session, cause)
        if end is not None:
            await self.link.end(LinkEnd("this HSM", end.why, f"{end.detail}; {NEW_SESSION}"))
            if refuse and isinstance(error, Exception):
                raise self._refusal_after(error, PedUnavailable) from None

    async def disconnect(self, *, forget_loss: bool = True) -> bool:
        """The administrator's disconnect: close the link (True if one was open) and,
        unless told otherwise, forget a lost one (the local PED is used again)."""
        if forget_loss:
            self.lost = None
        closed = await self.link.close()
        if closed and forget_loss:
            self.lost = None  # the link may have ended by itself meanwhile: still forgotten
        return closed
