"""The life cycle every relay daemon shares: listeners, control socket, links, graceful stop.

Theory of operation
-------------------
A daemon (pedserver, pedclient, hsmclient) subclasses `DaemonSkeleton` and keeps only
what differs: how it listens, how it serves one connection (`handle_connection`), how it
closes a link when stopping (`close_for_stop`) and what its ``mode show`` says (`status`).
`serve_on` then runs one nursery holding the control socket (``mode show/stop`` and the
commands a daemon adds to `extra_commands`), the daemon's background tasks and, in a
nursery of their own, one task per connection, each wrapped so that a failing handler
never takes the daemon down.  A daemon whose server serves its own connections
(hsmclient's p11-kit server) passes no listener and runs that server as a background
task; a ``show`` that must await something (hsmclient asks its servers) overrides
`show_now`.  `request_stop` (SIGTERM, SIGINT, ``mode stop``) closes every link with the
daemon's stop text, within `STOP_GRACE`, then cancels everything.
A start failure comes out as the daemon's own `start_error`, never in an ExceptionGroup.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import trio

from ped.daemon.control import ControlError, Progress, serve_control
from ped.daemon.groups import single_error
from ped.daemon.sdnotify import notify_stopping
from ped.errors import PedError

#: How long stopping waits for the links' Close frames to go out.
STOP_GRACE = 2.0

#: A control command a daemon adds (``mode connect``...): its arguments -> its answer.
ControlCommand = Callable[[dict[str, Any], Progress], Awaitable[dict[str, Any]]]

LinkT = TypeVar("LinkT")
StartedT = TypeVar("StartedT")


class DaemonSkeleton(Generic[LinkT]):
    """What pedserver and pedclient have in common; see the module docstring."""

    #: The program's name, as in its messages ("pedserver").
    prog: ClassVar[str]
    #: What `serve_on` raises when the daemon cannot start (the control socket).
    start_error: ClassVar[type[PedError]]
    #: The log line of a connection handler that failed (the type and text follow).
    handler_failed: ClassVar[str] = "connection handler failed"

    def __init__(
        self,
        log: logging.Logger,
        *,
        control_path: Path | None = None,
        on_stop_requested: Callable[[str], None] | None = None,
    ) -> None:
        self.log = log
        self.control_path = control_path
        self.links: dict[int, LinkT] = {}
        self.started = time.time()
        #: Control commands and ``show`` entries added by the daemon's parts (peer links).
        self.extra_commands: dict[str, ControlCommand] = {}
        self.show_extras: list[Callable[[], dict[str, Any]]] = []
        self._stop = trio.Event()
        self._on_stop_requested = on_stop_requested

    # ------------------------------------------------------------------ what differs

    async def handle_connection(self, stream: trio.abc.Stream) -> None:
        """Serve one accepted connection from start to close."""
        raise NotImplementedError

    async def close_for_stop(self, link: LinkT, text: str) -> None:
        """Close *link* because the daemon stops (*text* says so)."""
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        """The daemon's own ``mode show`` fields (`show` adds the parts' entries)."""
        raise NotImplementedError

    def known_commands(self) -> str:
        """How an unknown-command answer lists the commands there are."""
        return ", ".join(["show", "stop", *self.extra_commands])

    # ------------------------------------------------------------------ life cycle

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self.log.info("stopping: %s", reason)
            notify_stopping(reason)
            self._stop.set()

    async def serve_on(
        self,
        listeners: Sequence[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[StartedT],
        started: StartedT,
        on_listening: Callable[[], None],
        background: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        """Serve connections on *listeners* with the control socket and *background*
        tasks until `request_stop`; report *started* once listening (after
        *on_listening*, which logs it)."""
        try:
            async with trio.open_nursery() as nursery:
                if self.control_path is not None:
                    try:
                        await nursery.start(serve_control, self.control_path, self._control)
                    except ControlError as exc:
                        raise self.start_error(str(exc)) from None
                async with trio.open_nursery() as links_nursery:
                    for task in background:
                        nursery.start_soon(task)
                    if listeners:  # hsmclient's p11-kit server is a background task
                        nursery.start_soon(functools.partial(
                            trio.serve_listeners, self._handle_safely, list(listeners),
                            handler_nursery=links_nursery,
                        ))
                    on_listening()
                    task_status.started(started)
                    await self._stop.wait()
                    await self._close_all()
                    links_nursery.cancel_scope.cancel()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            error = single_error(group)
            if isinstance(error, self.start_error):
                raise error from None  # no ExceptionGroup at the public API
            raise

    async def _handle_safely(self, stream: trio.abc.Stream) -> None:
        try:
            await self.handle_connection(stream)
        except Exception as exc:  # one connection never takes the daemon down
            self.log.error("%s: %s: %s", self.handler_failed, type(exc).__name__, exc)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    async def _close_all(self) -> None:
        links = list(self.links.values())
        text = f"{self.prog} is stopping"
        if links:
            self.log.info("closing %d link(s): %s", len(links), text)
        with trio.move_on_after(STOP_GRACE):
            async with trio.open_nursery() as nursery:
                for link in links:
                    nursery.start_soon(self.close_for_stop, link, text)

    # ------------------------------------------------------------------ control

    def show(self) -> dict[str, Any]:
        """What ``mode show`` prints."""
        return self.status() | {k: v for extra in self.show_extras for k, v in extra().items()}

    async def show_now(self) -> dict[str, Any]:
        """What the ``show`` control command answers: `show`, unless a daemon must await
        part of it (hsmclient asks its servers for their slots)."""
        return self.show()

    async def _control(
        self, command: str, args: dict[str, Any], progress: Progress
    ) -> dict[str, Any]:
        if command == "show":
            return await self.show_now()
        if command == "stop":
            self.request_stop("mode stop")
            if self._on_stop_requested is not None:
                self._on_stop_requested("mode stop")
            return {"stopping": True, "links": len(self.links)}
        if command in self.extra_commands:
            return await self.extra_commands[command](args, progress)
        raise ControlError(
            f"unknown command {command!r}; {self.prog} knows {self.known_commands()}",
            "bad-request",
        )
