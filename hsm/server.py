"""The pedhsm daemon: the powered HSM, serving its shell over a control socket.

Theory of operation
-------------------
`run_daemon` opens the durable state (integrity check), powers the engine on, and serves
``control.sock`` in the home (owner-only; ``ped.daemon.control``) until ``mode stop`` or
SIGTERM.  One command runs at a time (`_command_lock`), as on an HSM's command processor;
``mode show`` and ``mode stop`` bypass the lock so a PED operation that waits for a key
never hides the daemon's status.  While a command runs, the texts it wants shown ("Please
attend to the PED.") stream to the shell as progress lines.

A heartbeat stamps the sealed auto-activation records every `HEARTBEAT` seconds, which
bounds how long the HSM was off at the next start (the two-hour rule errs on the safe
side: the measured time off is never shorter than the real one).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from hsm import render
from hsm.clock import TEST_CLOCK_ENV, clock_from_env
from hsm.crypto import MasterKey
from hsm.engine import Hsm
from hsm.errors import BadRequest, HsmError
from hsm.pedlink import PedRouter
from hsm.store import Store
from ped.daemon import ControlError, Progress, serve_control, watch_stop_signals

log = logging.getLogger("pedhsm")
SOCKET_NAME = "control.sock"
PID_NAME = "pedhsm.pid"
LOG_NAME = "pedhsm.log"
HEARTBEAT = 60.0
#: Commands that only read state: served at once, even while another command waits at the
#: PED (the engine is synchronous between awaits, so a read sees a consistent state).
READ_ONLY = frozenset(
    {
        "hsm.show",
        "hsm.showpolicies",
        "hsm.ped.show",
        "hsm.ped.timeout.show",
        "partition.show",
        "partition.showpolicies",
        "audit.log.verify",
    }
)
MAX_CHALLENGE_HEX = 2 * 256
MAX_VALUE_HEX = 2 * 64 * 1024


def _text(value: str) -> dict[str, Any]:
    return {"text": value}


def _str(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"--{name.replace('_', '-')} is required")
    return value


def _int(args: dict[str, Any], name: str) -> int:
    value = args.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"--{name} needs a whole number")
    return value


def _hex(args: dict[str, Any], name: str, limit: int) -> bytes | None:
    value = args.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"{name} is too long or not text")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise BadRequest(f"{name} is not hex") from None


class Daemon:
    def __init__(
        self,
        home: Path,
        *,
        serial: str | None,
        local_ped: str | None,
        pedclient: str | None,
    ) -> None:
        self.home = home
        self.clock = clock_from_env()
        self.store = Store(home)
        stored = self.store.get_meta("serial")
        if serial and stored and serial != stored:
            self.store.close()
            raise BadRequest(
                f"this home holds HSM serial {stored}; --serial {serial} cannot change it "
                "(use another --home for another HSM)"
            )
        self.master = MasterKey.load_or_create(home)
        self.router = PedRouter(
            local_uri=local_ped,
            pedclient_socket=pedclient,
            serial=serial or stored or "",
            timeouts=lambda: self.hsm.ped_timeouts(),
            on_drop=lambda reason: self.hsm.ped_link_dropped(reason),
        )
        self.hsm = Hsm(home, self.store, self.master, self.clock, self.router, serial)
        self.router.serial = self.hsm.serial
        self._command_lock = trio.Lock()
        self._stop = trio.Event()
        self.started = time.time()
        self.boot_notes: list[str] = []

    # ----------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED) -> None:
        self.boot_notes = self.hsm.power_on()
        for note in self.boot_notes:
            log.info("power on: %s", note)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.router.run)
                path = await nursery.start(serve_control, self.home / SOCKET_NAME, self.handle)
                nursery.start_soon(watch_stop_signals, self._on_signal)
                nursery.start_soon(self._heartbeat)
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
        if command == "mode.stop":
            self._stop.set()
            return _text(f"pedhsm (serial {self.hsm.serial}) is stopping.")
        handler = self._handlers().get(command)
        if handler is None:
            raise ControlError(f"unknown command {command!r}", "bad-request")
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
                        if command in READ_ONLY:
                            # Reads never wait behind a PED operation waiting for a person.
                            result = await handler(args, notify)
                        else:
                            async with self._command_lock:
                                result = await handler(args, notify)
                finally:
                    send.close()
                    watch_scope.cancel()
            if result is None:
                log.info("%s: cancelled, the shell went away", command)
                # Nobody reads the answer; an error answer to a closed socket would only
                # make the control server fail, so this is an (unread) plain result.
                return _text("cancelled: the shell went away")
            return result
        except HsmError as exc:
            if gone.is_set():
                return _text(f"the shell went away; the command ended with: {exc.message}")
            raise ControlError(exc.message, exc.code) from None
        except BaseExceptionGroup as group:  # never leak a group out of the handler
            first = group.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            if isinstance(first, HsmError):
                raise ControlError(first.message, first.code) from None
            raise first from None

    def _mode_show(self) -> dict[str, Any]:
        show = self.hsm.hsm_show()
        status = self.router.status()
        lines = [
            f"   pedhsm:           running (pid {os.getpid()})",
            f"   Home:             {self.home}",
            f"   Serial #:         {show['serial']}",
            f"   Label:            {show['label'] or '(none)'}",
            f"   HSM state:        {show['state']}",
            f"   PED:              {status['mode']}"
            + (f" ({status['address']})" if status.get("address") else ""),
            f"   Running for:      {int(time.time() - self.started)} s",
        ]
        if getattr(self.clock, "fake", False):
            lines.append(f"   WARNING: test clock in use ({TEST_CLOCK_ENV})")
        return {"text": "\n".join(lines), "pid": os.getpid(), "serial": show["serial"]}

    def _handlers(
        self,
    ) -> dict[str, Callable[[dict[str, Any], Callable[[str], None]], Awaitable[dict[str, Any]]]]:
        h = self.hsm

        async def hsm_init(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(await h.hsm_init(n, _str(a, "label"), bool(a.get("force"))))

        async def hsm_login(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(await h.hsm_login(n))

        async def hsm_logout(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(h.hsm_logout())

        async def hsm_show(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            d = h.hsm_show()
            return {"text": render.hsm_show(d), "data": d}

        async def hsm_zeroize(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(h.hsm_zeroize(bool(a.get("force"))))

        async def hsm_showpolicies(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            rows = h.hsm_showpolicies()
            return {"text": render.hsm_policies(rows), "data": rows}

        async def hsm_changepolicy(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(
                h.hsm_changepolicy(_int(a, "policy"), _int(a, "value"), bool(a.get("force")))
            )

        async def hsm_tamper(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(h.hsm_tamper())

        async def vector_init(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(await h.ped_vector_init(n))

        async def vector_erase(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(await h.ped_vector_erase())

        async def ped_connect(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            peer = a.get("peer")
            if peer is not None:
                return _text(await h.ped_connect(n, "", 0, peer=_str(a, "peer")))
            return _text(await h.ped_connect(n, _str(a, "ip"), _int(a, "port")))

        async def ped_disconnect(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(await h.ped_disconnect())

        async def ped_show(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            status = self.router.status()
            return {"text": render.ped_show(status, h.ped_timeouts()), "data": status}

        async def timeout_show(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            t = h.ped_timeouts()
            return {"text": render.ped_timeouts(t), "data": t}

        async def timeout_set(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(h.ped_timeout_set(_str(a, "type"), _int(a, "seconds")))

        async def part_create(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(h.partition_create(_str(a, "name")))

        async def part_init(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(await h.partition_init(n, _str(a, "name"), bool(a.get("force"))))

        async def part_show(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            d = h.partition_show(_str(a, "name"))
            return {"text": render.partition_show(d), "data": d}

        async def part_delete(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(h.partition_delete(_str(a, "name"), bool(a.get("force"))))

        async def part_showpol(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            name = _str(a, "name")
            rows = h.partition_showpolicies(name)
            return {"text": render.partition_policies(name, rows), "data": rows}

        async def part_changepol(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(
                h.partition_changepolicy(_str(a, "name"), _int(a, "policy"), _int(a, "value"))
            )

        def chal(a: dict[str, Any]) -> bytes | None:
            return _hex(a, "challenge", MAX_CHALLENGE_HEX)

        async def role_init(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(await h.role_init(n, _str(a, "partition"), _str(a, "name"), chal(a)))

        async def role_login(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(await h.role_login(n, _str(a, "partition"), _str(a, "name"), chal(a)))

        async def role_logout(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(h.role_logout(a.get("partition") or None))

        async def role_resetpw(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(await h.role_resetpw(n, _str(a, "partition"), _str(a, "name"), chal(a)))

        async def role_activate(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(await h.role_activate(n, _str(a, "partition"), _str(a, "name")))

        async def role_deactivate(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(h.role_deactivate(_str(a, "partition"), _str(a, "name")))

        async def obj_create(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            value = _hex(a, "value", MAX_VALUE_HEX)
            return _text(h.object_create(_str(a, "partition"), _str(a, "label"), value))

        async def obj_list(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            name = _str(a, "partition")
            rows = h.object_list(name)
            return {"text": render.objects(name, rows), "data": rows}

        async def audit_init(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(await h.audit_init(n, bool(a.get("force"))))

        async def audit_login(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(await h.audit_login(n))

        async def audit_logout(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            return _text(h.audit_logout())

        async def audit_show(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            tail = a.get("tail")
            records = h.audit_show(tail if isinstance(tail, int) and tail > 0 else None)
            return {"text": render.audit_records(records), "count": len(records)}

        async def audit_verify(a: dict[str, Any], n: Callable[[str], None]) -> dict[str, Any]:
            r = h.audit_verify()
            if not r["ok"]:
                raise ControlError(
                    f"audit log verification FAILED after {r['records']} good record(s): "
                    f"{r['problem']}",
                    "audit-broken",
                )
            return {
                "text": f"Audit log verified: {r['records']} record(s), chain intact.",
                "data": r,
            }

        return {
            "hsm.init": hsm_init,
            "hsm.login": hsm_login,
            "hsm.logout": hsm_logout,
            "hsm.show": hsm_show,
            "hsm.zeroize": hsm_zeroize,
            "hsm.showpolicies": hsm_showpolicies,
            "hsm.changepolicy": hsm_changepolicy,
            "hsm.tamper": hsm_tamper,
            "hsm.ped.vector.init": vector_init,
            "hsm.ped.vector.erase": vector_erase,
            "hsm.ped.connect": ped_connect,
            "hsm.ped.disconnect": ped_disconnect,
            "hsm.ped.show": ped_show,
            "hsm.ped.timeout.show": timeout_show,
            "hsm.ped.timeout.set": timeout_set,
            "partition.create": part_create,
            "partition.init": part_init,
            "partition.show": part_show,
            "partition.delete": part_delete,
            "partition.showpolicies": part_showpol,
            "partition.changepolicy": part_changepol,
            "role.init": role_init,
            "role.login": role_login,
            "role.logout": role_logout,
            "role.resetpw": role_resetpw,
            "role.activate": role_activate,
            "role.deactivate": role_deactivate,
            "object.create": obj_create,
            "object.list": obj_list,
            "audit.init": audit_init,
            "audit.login": audit_login,
            "audit.logout": audit_logout,
            "audit.log.show": audit_show,
            "audit.log.verify": audit_verify,
        }
