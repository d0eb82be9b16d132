"""The pedhsm daemon: the powered HSM, serving its shell over a control socket.

Theory of operation
-------------------
`Daemon` opens the durable state (integrity check), powers the HSM on (`hsm.engine.Hsm`),
and serves ``control.sock`` in the home (owner-only; ``ped.daemon.control``) until
``mode stop`` or SIGTERM, answering each command as its row in the table of `hsm.control`
says.  One command runs at a time (`_command_lock`), as on an HSM's command processor;
``mode show`` and ``mode stop`` bypass the lock so a PED operation that waits for a key
never hides the daemon's status.  While a command runs, the texts it wants shown ("Please
attend to the PED.") stream to the shell as progress lines.

The client listener (`hsm.ntlsd`, PKCS#11 applications through hsmclient over pinned
mutual TLS, port 1792 unless ``--ntls-port``; 0 turns it off) runs in the same nursery
and takes `_command_lock` for the calls that may wait at the PED (cloning); the others
never queue behind a command that waits for a person (`hsm.ntlsd`).  A port that cannot
be bound leaves the HSM running without it (logged; ``ntls show`` says why).

A heartbeat stamps the sealed auto-activation records every `HEARTBEAT` seconds, which
bounds how long the HSM was off at the next start (the two-hour rule errs on the safe
side: the measured time off is never shorter than the real one).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from hsm import control
from hsm.backup import BackupPartitions, is_backup_hsm, mark_backup_hsm
from hsm.backup_access import BackupAccess
from hsm.clock import TEST_CLOCK_ENV, clock_from_env
from hsm.crypto import MasterKey
from hsm.engine import Hsm
from hsm.errors import HsmError, InvalidCommand
from hsm.ntlsd import NtlsListener
from hsm.pedlink import PedRouter
from hsm.store import Store
from ped.daemon import (
    ControlError,
    Progress,
    serve_control,
    watch_reopen_signal,
    watch_stop_signals,
)
from ped.daemon.memkeep import keep_memory
from ped.pkcs11.token import PartitionAccess

log = logging.getLogger("pedhsm")
SOCKET_NAME = "control.sock"
PID_NAME = "pedhsm.pid"
LOG_NAME = "pedhsm.log"
HEARTBEAT = 60.0


class Daemon:
    """The powered HSM: its PED router, its control socket, its heartbeat.

    Its nursery in `run` holds the listeners: the control socket and the client
    listener (`hsm.ntlsd`), which shares `_command_lock`; see `hsm.engine` for what
    they call.
    """

    def __init__(
        self,
        home: Path,
        *,
        serial: str | None,
        local_ped: str | None,
        pedclient: str | None,
        ntls_port: int = 0,
        ntls_ip: str | None = None,
        backup: bool = False,
    ) -> None:
        if not 0 <= ntls_port <= 65535:
            raise InvalidCommand(f"--ntls-port {ntls_port} is not between 0 and 65535")
        self.home = home
        self.clock = clock_from_env()
        self.store = Store(home)
        stored = self.store.get_meta("serial")
        if serial and stored and serial != stored:
            self.store.close()
            raise InvalidCommand(
                f"this home holds HSM serial {stored}; --serial {serial} cannot change it "
                "(use another --home for another HSM)"
            )
        self.master = MasterKey.load_or_create(home)
        self.router = PedRouter(
            local_uri=local_ped,
            pedclient_socket=pedclient,
            serial=serial or stored or "",
            timeouts=lambda: self.hsm.ped.timeouts(),
            on_drop=lambda loss: self.hsm.ped.link_dropped(loss),
            now=self.clock.now,
            hsm_rpv=lambda: self.hsm.ped.rpv_if_set(),
        )
        if backup and not is_backup_hsm(self.store):
            try:
                mark_backup_hsm(self.store)
            except HsmError:
                self.store.close()
                raise
        self.hsm = Hsm(home, self.store, self.master, self.clock, self.router, serial)
        self.router.serial = self.hsm.serial
        #: A Backup HSM (`hsm.backup`; the home remembers it): its clients' view, `hsm show`.
        self.backups = BackupPartitions(self.hsm.state) if is_backup_hsm(self.store) else None
        access_for: Callable[[str], PartitionAccess] = self.hsm.client_access
        if self.backups is not None:
            st, logins = self.hsm.state, self.hsm.logins
            access_for = lambda name: BackupAccess(st, logins, name)  # noqa: E731
        self._command_lock = trio.Lock()
        self.ntls: NtlsListener | None = None
        self.ntls_problem = "turned off (--ntls-port 0)"
        if ntls_port:
            self.ntls = NtlsListener(home, self.hsm.serial, access_for,
                                     self._command_lock, port=ntls_port, host=ntls_ip)  # fmt: skip
        self._stop = trio.Event()
        self.started = time.time()

    # ----------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED) -> None:
        for note in self.hsm.power_on():
            log.info("power on: %s", note)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.router.run)
                path = await nursery.start(serve_control, self.home / SOCKET_NAME, self.handle)
                await nursery.start(watch_stop_signals, self._on_signal)  # before "ready"
                await nursery.start(watch_reopen_signal)  # SIGHUP: reopen the log
                await self._start_ntls(nursery)
                nursery.start_soon(self._heartbeat)
                nursery.start_soon(keep_memory)  # freed heap pages back to the system
                log.info("pedhsm serial %s serving on %s", self.hsm.serial, path)
                task_status.started(path)
                await self._stop.wait()
                # Let the answer to `mode stop` leave before the socket goes.
                await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self.router.disconnect()
            self.hsm.power_off()
            self.store.close()
            self.master.wipe()
            log.info("pedhsm stopped (power off)")

    async def _start_ntls(self, nursery: trio.Nursery) -> None:
        if self.ntls is None:
            return
        try:
            await nursery.start(self.ntls.run)
        except OSError as exc:
            where = f"{self.ntls.host or 'every address'} port {self.ntls.port}"
            self.ntls_problem = f"cannot listen on {where}: {exc.strerror or exc}"
            log.warning("NTLS: %s; the HSM runs without its client listener (start it with "
                        "another --ntls-port, or free that port)", self.ntls_problem)  # fmt: skip
            self.ntls = None

    def _on_signal(self, signum: int) -> None:
        log.info("signal %d: stopping", signum)
        self._stop.set()

    async def _heartbeat(self) -> None:
        while True:
            await trio.sleep(HEARTBEAT)
            async with self._command_lock:
                self.hsm.heartbeat()

    # ----------------------------------------------------------------- requests

    async def handle(
        self, command: str, args: dict[str, Any], progress: Progress
    ) -> dict[str, Any]:
        if command == "mode.show":
            return self._mode_show()
        if command == "ntls.show":
            off = [f"   NTLS:                {self.ntls_problem}"]
            lines = self.ntls.show() if self.ntls else off
            return {"text": "\n".join(lines)}
        if command == "mode.stop":
            self._stop.set()
            return {"text": f"pedhsm (serial {self.hsm.serial}) is stopping."}
        entry = control.BY_NAME.get(command)
        if entry is None:
            raise ControlError(f"unknown command {command!r}", "bad-request")
        if command == "hsm.show" and self.backups is not None:
            shown = await self._handle(entry, args, progress)
            shown["text"] = "\n".join([shown.get("text", ""), *self.backups.show_lines()])
            if isinstance(shown.get("data"), dict):
                shown["data"]["backup_partitions"] = self.backups.listing()
            return shown
        return await self._handle(entry, args, progress)

    async def _handle(
        self, entry: control.Command, args: dict[str, Any], progress: Progress
    ) -> dict[str, Any]:
        command = entry.name
        send, receive = trio.open_memory_channel[str](64)

        def notify(text: str) -> None:
            try:
                send.send_nowait(text)
            except trio.WouldBlock:
                pass

        async def forward() -> None:
            async with receive:
                async for text in receive:
                    try:
                        await progress.send(text)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass

        watch_scope, command_scope = trio.CancelScope(), trio.CancelScope()
        gone = trio.Event()

        async def watch_client() -> None:
            # The shell sends nothing after its request: end of stream means it is gone
            # (Ctrl-C), and whatever it asked for is cancelled (the PED gets a CANCEL).
            with watch_scope:
                await progress.wait_client_gone()
                gone.set()
                command_scope.cancel()

        result: dict[str, Any] | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward)
                nursery.start_soon(watch_client)
                try:
                    with command_scope:
                        if entry.read_only:
                            # Reads never wait behind a PED operation waiting for a person.
                            result = await control.run(entry, self.hsm, args, notify)
                        else:
                            async with self._command_lock:
                                result = await control.run(entry, self.hsm, args, notify)
                finally:
                    send.close()
                    watch_scope.cancel()
            if result is None:
                log.info("%s: cancelled, the shell went away", command)
                # Nobody reads the answer; an error answer to a closed socket would only
                # make the control server fail, so this is an (unread) plain result.
                return {"text": "cancelled: the shell went away"}
            return result
        except HsmError as exc:
            if gone.is_set():
                return {"text": f"the shell went away; the command ended with: {exc.message}"}
            raise ControlError(exc.message, exc.code) from None
        except BaseExceptionGroup as group:  # never leak a group out of the handler
            first = group.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            if isinstance(first, HsmError):
                raise ControlError(first.message, first.code) from None
            raise first from None

    def _mode_show(self) -> dict[str, Any]:
        show = self.hsm.admin.show()
        status = self.router.status()
        lines = [
            f"   pedhsm:           running (pid {os.getpid()})",
            f"   Home:             {self.home}",
            f"   Serial #:         {show['serial']}",
            f"   Label:            {show['label'] or '(none)'}",
            f"   HSM state:        {show['state']}"
            + (" (Backup HSM)" if self.backups is not None else ""),
            f"   PED:              {status['mode']}"
            + (f" ({status['address']})" if status.get("address") else "")
            + (" - link lost, see `hsm ped show`" if status.get("lost") else ""),
            f"   pedclient socket: {status.get('pedclient') or '(none)'}",
            f"   Running for:      {int(time.time() - self.started)} s",
        ]
        if getattr(self.clock, "fake", False):
            lines.append(f"   WARNING: test clock in use ({TEST_CLOCK_ENV})")
        return {"text": "\n".join(lines), "pid": os.getpid(), "serial": show["serial"]}
