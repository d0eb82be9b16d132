"""Which PED the HSM uses: the local one, or the remote one through pedclient.

Theory of operation
-------------------
The HSM has at most two PEDs:

* a **local** PED, cabled to it (``pedhsm mode start --local-ped URI``), reached through a
  ``ped.device`` driver.  There is no orange key on that path: the channel runs keyed by
  ``ped.channel.LOCAL_RPV``, which the PED accepts only in its local mode;
* a **remote** PED, reached by ``hsm ped connect --ip A --port P`` through pedclient's
  socket (``--pedclient PATH``), with the end-to-end channel keyed by the HSM's RPV: the
  remote PED asks for the orange key once, at connect.  The session is kept open until
  ``hsm ped disconnect``, the idle timeout (``rped``), or the link dropping.

`PedRouter.session` picks: the remote PED while it is connected (as on a Luna, the local
PED is ignored while remote is active), else the local PED, else `PedUnavailable` saying
how to get one.  ``hsm ped vector init`` asks for ``local_only`` (an RPV is imprinted only
through a cabled PED).  A local session is opened per operation: a local operation in
progress holds the PED's lock, so a remote one waits (or is told the PED is busy).

Each session is handed out as an `hsm.apiport.HsmApiPort`.  Errors of ``ped`` become
the HSM's in ``hsm.apiport`` only (`map_error`, `driver_unavailable`): what the HSM
counts and what it does not.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

from hsm.apiport import (
    HsmApiPort,
    PedLinkLost,
    describe_notice,
    driver_unavailable,
    first_error,
    map_error,
    passes_through,
)
from hsm.crypto import wipe
from hsm.errors import PedUnavailable
from ped.channel import LOCAL_RPV
from ped.errors import PedError

log = logging.getLogger("pedhsm.ped")
BUSY_WAIT = 15.0


def local_rpv() -> bytes:
    """The fixed, public RPV of a cabled PED (accepted by a PED only in its local mode)."""
    return bytes(LOCAL_RPV)


class PedRouter:
    """Local and remote PED access for one HSM (see the module docstring)."""

    def __init__(
        self,
        *,
        local_uri: str | None,
        pedclient_socket: str | None,
        serial: str,
        timeouts: Callable[[], dict[str, int]],
        on_drop: Callable[[str], None],
        driver_factory: Callable[[str], Any] | None = None,
    ) -> None:
        self.local_uri = local_uri
        self._driver_factory = driver_factory
        self.pedclient_socket = pedclient_socket
        self.serial = serial
        self._timeouts = timeouts
        self._on_drop = on_drop
        self._driver: Any = None
        self._nursery: trio.Nursery | None = None
        self._remote: Any = None  # the open hsm_api session
        self._remote_address: str | None = None
        self._remote_stop: trio.Event | None = None
        self._remote_done: trio.Event | None = None
        self._remote_lock = trio.Lock()
        self._last_use = 0.0
        self._remote_peer = False
        self._notify: Callable[[str], None] | None = None

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
                    if self._driver is not None:
                        with contextlib.suppress(Exception):
                            await self._driver.aclose()
                        self._driver = None

    def _touch(self) -> None:
        self._last_use = trio.current_time()

    async def _idle_watch(self) -> None:
        while True:
            await trio.sleep(1.0)
            if self._remote is None or self._remote_lock.locked():
                continue
            if self._remote_peer:
                continue  # REFERENCE: the idle timeout does not apply to PED-initiated links
            idle = trio.current_time() - self._last_use
            if idle >= self._timeouts()["rped"]:
                address = self._remote_address
                if await self.disconnect():
                    log.info("remote PED %s: idle timeout", address)
                    self._on_drop(f"idle timeout ({self._timeouts()['rped']} s)")

    def status(self) -> dict[str, Any]:
        connected = self._remote is not None
        idle_left = None
        if connected and not self._remote_peer:
            left = self._timeouts()["rped"] - (trio.current_time() - self._last_use)
            idle_left = max(0, math.ceil(left))
        return {
            "mode": "remote" if connected else ("local" if self.local_uri else "none"),
            "local": self.local_uri,
            "address": self._remote_address,
            "connected": connected,
            "pedclient": self.pedclient_socket,
            "idle_left": idle_left,
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
            text = describe_notice(notice)
            if text:
                notify(text)

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
        if not local_only and self._remote is not None:
            async with self._remote_lock:
                if self._remote is None:
                    raise PedUnavailable("the remote PED link dropped; run `hsm ped connect`")
                try:
                    where = f"remote PED {self._remote_address}"
                    yield HsmApiPort(self._remote, where, self._touch, self._timeouts)
                except PedLinkLost:
                    await self._drop("link lost during an operation")
                    raise
            return
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
        async with self._local_session() as port:
            yield port

    @contextlib.asynccontextmanager
    async def _local_session(self) -> AsyncIterator[HsmApiPort]:
        from ped.device import open_driver
        from ped.hsm_api import open_ped_session

        where = f"local PED {self.local_uri}"
        rpv = bytearray(local_rpv())
        try:
            if self._driver is None or not self._driver.is_open:
                try:
                    factory = self._driver_factory or open_driver
                    self._driver = factory(self.local_uri or "")
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
                async with open_ped_session(transport, rpv=rpv, **self._session_args()) as ped:
                    yield HsmApiPort(ped, where, self._touch, self._timeouts)
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
        await self.disconnect()
        address = f"peer {peer}" if peer is not None else f"{host}:{port}"
        rpv_copy = bytearray(rpv)
        try:
            await self._nursery.start(self._hold_remote, host, port, rpv_copy, peer)
        except BaseExceptionGroup as group:
            raise map_error(first_error(group), f"remote PED {address}") from None
        except PedError as exc:
            if isinstance(exc, PedUnavailable):
                raise
            raise map_error(exc, f"remote PED {address}") from None
        return address

    async def _hold_remote(
        self,
        host: str,
        port: int,
        rpv: bytearray,
        peer: str | None,
        *,
        task_status: trio.TaskStatus[None],
    ) -> None:
        from ped.hsm_api import open_ped_session
        from ped.link import connect_via_pedclient

        address = f"peer {peer}" if peer is not None else f"{host}:{port}"
        stop, done = trio.Event(), trio.Event()
        try:
            try:
                transport = await connect_via_pedclient(
                    self.pedclient_socket or "",
                    host if peer is None else None,
                    port if peer is None else 1503,  # unused for a peer; must be valid
                    peer=peer,
                    idle_timeout=self._timeouts()["rped"],
                    hsm_name=f"pedhsm {self.serial}",
                )
            except PedError as exc:
                raise map_error(exc, f"remote PED {address}") from None
            started = False
            try:
                async with open_ped_session(transport, rpv=rpv, **self._session_args()) as ped:
                    wipe(rpv)
                    self._remote, self._remote_address = ped, address
                    self._remote_peer = peer is not None
                    self._remote_stop, self._remote_done = stop, done
                    self._touch()
                    task_status.started()
                    started = True
                    await stop.wait()
            except Exception as exc:
                if not started:
                    raise
                # Closing a link that already died: the HSM carries on without it.
                log.info("remote PED %s: closed with %s", address, type(exc).__name__)
            finally:
                self._remote = None
                self._remote_address = None
                with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await transport.aclose()
        finally:
            wipe(rpv)
            done.set()

    async def _drop(self, reason: str) -> None:
        if await self.disconnect():
            self._on_drop(reason)

    async def disconnect(self) -> bool:
        stop, done = self._remote_stop, self._remote_done
        if stop is None or done is None or self._remote is None:
            return False
        self._remote_stop = self._remote_done = None
        stop.set()
        with trio.move_on_after(10):
            await done.wait()
        return True
