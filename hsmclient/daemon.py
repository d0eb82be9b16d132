"""hsmclient's daemon: the applications' p11-kit socket served over the registered servers.

Theory of operation
-------------------
The daemon owns three things: the applications' Unix socket (p11-kit RPC, 0600; the
codec and per-application state are `hsmclient.p11kit`'s), a `Backend` that turns each
application connection into an `Application` over the servers registered in
``HOME/pins.sqlite3`` (`hsmclient.remote.RemoteBackend`, slot ids from
`hsmclient.slots.SlotMap`; `hsmclient.ha.backend.HaBackend` adds the HA groups' virtual
slots and runs their automatic recovery), and the control socket of
`ped.daemon.skeleton` for ``mode show/stop``, ``slots`` (what ``hsmclient slot list``
and ``verify`` print), ``clone`` and ``hagroup``.

The backend is chosen at run time (`load_backend`), so that a test can put another
`Backend` in RemoteBackend's place: the hidden test hook is the environment
variable ``HSMCLIENT_TEST_BACKEND=module:callable``; the callable is called as
HaBackend is, ``(home, pins, slot_map)``, and must return a `Backend`.  It is read
only when the daemon (or ``verify``) builds its backend, and never by anything an
operator is told to use.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import attrs
import trio

from hsmclient.commands_archive import archive_command
from hsmclient.commands_clone import clone_command
from hsmclient.ha.control import ha_command
from hsmclient.p11kit import open_p11kit_listener
from hsmclient.p11kit import serve_p11kit as serve_p11kit_
from hsmclient.p11kit.errors import SocketInUse
from hsmclient.settings import Settings, server_address
from hsmclient.slots import SlotMap
from ped.daemon.skeleton import DaemonSkeleton
from ped.daemon.sockets import remove_socket_file
from ped.errors import PedError
from ped.pkcs11.token import Backend
from ped.tls import PinStore

log = logging.getLogger("hsmclient")

#: Seconds ``mode show`` waits for the servers' slots at most (its own answer: 10 s).
SHOW_SLOTS_TIMEOUT = 7.0

#: The hidden test hook: ``module:callable`` building the backend instead of HaBackend.
BACKEND_ENV = "HSMCLIENT_TEST_BACKEND"


class HsmClientStartError(PedError):
    """hsmclient cannot start; the message says why."""


#: `hsmclient.p11kit`'s listener and server, or a test's stand-ins.
OpenListener = Callable[[Path], trio.SocketListener]
ServeP11kit = Callable[[trio.SocketListener, Backend], Awaitable[None]]


@attrs.frozen
class SlotLine:
    """One row of ``slot list``: a partition a server shows this client, by slot id."""

    slot_id: int | None
    server: str
    serial: str
    label: str
    state: str
    auto_activation: bool | None = None  # None: not known (a version-1 pedhsm, no partition)

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def state_words(self) -> str:
        """The state column: "ready, auto-activation" when the activation survives a
        restart of the HSM (partition policy 23), as an HA member needs."""
        return f"{self.state}, auto-activation" if self.auto_activation else self.state


def load_backend(home: Path, pins: PinStore, slot_map: SlotMap) -> Backend:
    """HaBackend, or what ``HSMCLIENT_TEST_BACKEND`` names (see the module docstring)."""
    spec = os.environ.get(BACKEND_ENV) or "hsmclient.ha.backend:HaBackend"
    module_name, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise HsmClientStartError(f"cannot load the backend {spec}: {exc}") from None
    return cast(Backend, factory(home, pins, slot_map))


async def close_backend(backend: Backend) -> None:
    """``await backend.aclose()`` when the backend has one (RemoteBackend's connections)."""
    aclose = getattr(backend, "aclose", None)
    if aclose is not None:
        await aclose()


async def slot_lines(backend: Backend) -> list[SlotLine]:
    """What the servers show this client now, one line per slot (`slot_rows` when the
    backend has it; else one application's slot and token info)."""
    rows = getattr(backend, "slot_rows", None)
    if rows is not None:
        # A server-wide row (unreachable, nothing assigned) has no slot: -1 or None.
        return [SlotLine(r.slot_id if r.slot_id is not None and r.slot_id >= 0 else None,
                         r.server, r.serial, r.label, r.state,
                         # a backend whose rows cannot say (a test backend): unknown
                         getattr(r, "auto_activation", None))
                for r in await rows()]
    app = await backend.connect()
    try:
        lines = []
        for slot in await app.slots():
            if not slot.token_present:
                lines.append(SlotLine(slot.slot_id, "local", "", slot.description,
                                      "token not present"))
                continue
            token = await app.token_info(slot.slot_id)
            lines.append(SlotLine(slot.slot_id, "local", token.serial, token.label, "ready"))
        return lines
    finally:
        await app.close()


def server_states(pins: PinStore, lines: Sequence[SlotLine] | None) -> list[dict[str, Any]]:
    """Each registered server with its link state in words, from the slot lines."""
    servers = []
    for peer in pins.list():
        state = "not asked"
        if lines is not None:
            mine = [line for line in lines if line.server == peer.name]
            broken = [line.state for line in mine if line.state.startswith("server ")]
            if broken:
                state = broken[0]
            elif mine:
                state = f"reachable, {len(mine)} partition(s)"
            else:
                state = "reachable, no partition assigned to this client"
        servers.append({"name": peer.name, "address": f"{peer.ip}:{peer.port}",
                        "fingerprint": peer.fingerprint, "state": state})
    return servers


class HsmClient(DaemonSkeleton[None]):
    """The hsmclient daemon; `serve` runs it until `request_stop`."""

    prog: ClassVar[str] = "hsmclient"
    start_error: ClassVar[type[PedError]] = HsmClientStartError

    def __init__(
        self,
        settings: Settings,
        *,
        home: Path,
        endpoint_path: Path,
        backend: Backend,
        control_path: Path | None = None,
        p11kit: tuple[OpenListener, ServeP11kit] | None = None,
    ) -> None:
        super().__init__(log, control_path=control_path)
        self.settings = settings
        self.home = home
        self.endpoint_path = endpoint_path
        self.backend = backend
        self.pins = PinStore(home, program="hsmclient")
        self._p11kit = p11kit
        self.extra_commands["slots"] = self._slots_command
        self.extra_commands["clone"] = lambda args, _progress: clone_command(self.backend, args)
        self.extra_commands["hagroup"] = lambda args, _progress: ha_command(self.backend, args)
        self.extra_commands["archive"] = lambda args, _p: archive_command(self.backend, args)

    async def serve(
        self, *, task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve applications until `request_stop`; `HsmClientStartError` if it cannot."""
        open_listener, serve_p11kit = self._p11kit or (open_p11kit_listener, serve_p11kit_)
        listener = self._listen(open_listener)
        background: list[Callable[[], Awaitable[None]]] = [
            lambda: serve_p11kit(listener, self.backend)]
        recovery = getattr(self.backend, "run_recovery", None)
        if recovery is not None:  # HA groups' automatic recovery (hsmclient.ha.backend)
            background.append(recovery)
        try:
            await self.serve_on(
                [], task_status=task_status, started=self.endpoint_path,
                on_listening=lambda: log.info(
                    "listening for PKCS#11 applications on %s (%s)", self.endpoint_path,
                    server_address(self.endpoint_path)),
                background=background,
            )
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
                with trio.move_on_after(5):
                    await close_backend(self.backend)
            remove_socket_file(self.endpoint_path)
            log.info("stopped")

    def _listen(self, open_listener: OpenListener) -> trio.SocketListener:
        path = self.endpoint_path
        if len(os.fsencode(path)) > 100:
            raise HsmClientStartError(
                f"socket path {path} is too long for a Unix socket; use a shorter --home "
                "or --socket")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            return open_listener(path)  # a crash's leftover socket is replaced
        except SocketInUse as exc:
            raise HsmClientStartError(f"{exc} (or give --socket)") from None
        except OSError as exc:
            raise HsmClientStartError(
                f"cannot listen on {path}: {exc.strerror or exc}") from None

    async def close_for_stop(self, link: None, text: str) -> None:
        """Applications' connections end with the p11-kit server's cancellation."""

    def known_commands(self) -> str:
        return "show, stop, slots, clone, archive and hagroup"

    # ------------------------------------------------------------------ control

    async def query_slots(self, timeout: float | None = None
                          ) -> tuple[list[SlotLine] | None, str]:
        """The slot lines, or None and why (the servers did not answer in time)."""
        timeout = timeout or self.settings.slot_query_timeout
        try:
            with trio.move_on_after(timeout):
                return await slot_lines(self.backend), ""
        except PedError as exc:
            return None, str(exc)
        return None, f"the servers did not answer within {timeout:g} s"

    async def _slots_command(self, args: dict[str, Any], progress: Any,
                             timeout: float | None = None) -> dict[str, Any]:
        lines, why = await self.query_slots(timeout)
        return {
            "slots": None if lines is None else [line.to_json() for line in lines],
            "error": why,
            "servers": server_states(self.pins, lines),
            "socket": str(self.endpoint_path),
        }

    async def show_now(self) -> dict[str, Any]:
        # `mode show` waits 10 s for its answer: the servers get less, so that a hung
        # one still leaves a show saying so.
        timeout = min(self.settings.slot_query_timeout, SHOW_SLOTS_TIMEOUT)
        return self.show() | await self._slots_command({}, None, timeout)

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "since": round(self.started, 3),
            "socket": str(self.endpoint_path),
            "p11kit_address": server_address(self.endpoint_path),
            "slot_query_timeout": self.settings.slot_query_timeout,
        }
