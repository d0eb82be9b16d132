"""pedserver: serves one PED device to HSMs whose pedclient dials in.

Theory of operation
-------------------
`PedServer` is the `ped.daemon.skeleton.DaemonSkeleton` of pedserver: one nursery holds
the TCP listener(s), the control socket (``mode show/stop``), the device watch
(`pedserver.device`: (re)opens the PED when it is absent), the PED event log
(`pedserver.events`) and one task group per connection.  A connection goes through the
door (`pedserver.admission`: hello, refusals, welcome) and is then relayed
(`pedserver.relay`: the PED's lock, frames both ways, keepalives and timeouts) until it
ends.  `pedserver.peer` feeds dialled TLS connections to `handle_connection` and closes
links through `close_link`.

Everything is bounded: hello time, frame size (the link decoder's maximum), links and
half-open connections (in all and per source address), the wait for a busy PED, a
link's hold of the PED, a link's time without an RPV handshake, and repeated log
lines (`pedserver.lograte`).  A connection that sends garbage gets a
Close/LinkRefused naming the problem and is dropped; no other connection notices.
Stopping (SIGTERM, SIGINT, ``mode stop``) sends every link Close(SHUTTING_DOWN) first.

Logs carry one line per link event and per PED event (the device's non-secret
metadata: operation, colour, keyset id, result), never a payload byte.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import trio

from ped.daemon.skeleton import DaemonSkeleton
from ped.device import PedDriver
from ped.errors import PedError
from ped.link.connection import Hop, LinkConnection, Side
from ped.link.messages import LINK_VERSION_MAX, LINK_VERSION_MIN, Close
from ped.link.stream import LinkStream
from ped.wire.types import CloseCode
from pedserver.admission import Admission
from pedserver.device import DeviceWatch
from pedserver.events import EventLog
from pedserver.links import LinkRecord, peer_of
from pedserver.lograte import RepeatedLines
from pedserver.relay import LinkRelay
from pedserver.settings import Settings

log = logging.getLogger("pedserver")


class ServerStartError(PedError):
    """pedserver cannot start; the message says why and what to do."""


class PedServer(DaemonSkeleton[LinkRecord]):
    """The pedserver daemon; `serve` runs it until `request_stop`."""

    prog: ClassVar[str] = "pedserver"
    start_error: ClassVar[type[PedError]] = ServerStartError

    def __init__(
        self,
        settings: Settings,
        driver: PedDriver,
        *,
        control_path: Path | None = None,
        on_stop_requested: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(log, control_path=control_path, on_stop_requested=on_stop_requested)
        self.settings = settings
        self.address: tuple[str, int] | None = None
        self.device = DeviceWatch(driver, settings.device)
        self.relay = LinkRelay(settings, self.device)
        self.repeated_lines = RepeatedLines(
            log, interval=settings.log_repeat_interval, burst=settings.log_repeat_burst
        )
        self.admission = Admission(settings, self.links, stopping=lambda: self.stopping,
                                   device_summary=self.device.summary,
                                   lines=self.repeated_lines)
        self.events = EventLog(self.relay.link_of_session)
        self._ids = itertools.count(1)
        driver.on_event = self._on_ped_event
        # Every session has its pump (pedserver.relay) receiving: the PED's answer is
        # relayed before the events behind it are parsed
        # (ped.device.base.PedDriver.frames_first).
        driver.frames_first = True

    # ------------------------------------------------------------------ life cycle

    async def serve(
        self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, serve links, stop gracefully; `ServerStartError` if it cannot start."""
        s = self.settings
        await self.device.try_open(first=True)
        try:
            listeners = await trio.open_tcp_listeners(s.port, host=s.ip)
        except OSError as exc:
            await self.device.close()
            hint = (
                "is another pedserver running? pick another --port"
                if exc.errno in (98, 48)
                else "check --ip (an address of this host) and --port"
            )
            raise ServerStartError(
                f"cannot listen on {s.ip}:{s.port}: {exc.strerror or exc}; {hint}"
            ) from None
        bound = listeners[0].socket.getsockname()
        address = self.address = (str(bound[0]), int(bound[1]))

        def on_listening() -> None:
            log.info(
                "listening on %s:%d, PED %s (%s), idle timeout %d s",
                address[0], address[1], s.device or "(none)",
                self.device.text(), s.idle_timeout,
            )

        try:
            await self.serve_on(
                listeners, task_status=task_status, started=address,
                on_listening=on_listening,
                background=(self.events.run, self.device.watch, self.repeated_lines.run),
            )
        finally:
            for listener in listeners:
                with trio.CancelScope(shield=True):
                    await listener.aclose()
            await self.device.close()
            log.info("stopped")

    async def close_for_stop(self, link: LinkRecord, text: str) -> None:
        await self.close_link(link, CloseCode.SHUTTING_DOWN, text)

    async def close_link(self, record: LinkRecord, code: CloseCode, text: str) -> None:
        """Close one link with a Close(code, text) saying why."""
        await self.relay.close_link(record, code, text)

    # ------------------------------------------------------------------ one connection

    async def handle_connection(
        self, stream: trio.abc.Stream, peer: str | None = None, *, idle_timeout: bool = True
    ) -> None:
        """Serve one connection from hello to close (public so tests can feed memory
        streams and the peer-to-peer mode feeds dialled TLS streams, with
        ``idle_timeout=False``: a peer link is never closed for being idle)."""
        peer = peer or peer_of(stream)
        link = LinkStream(stream, LinkConnection(Hop.REMOTE, Side.RESPONDER))
        record = LinkRecord(next(self._ids), peer, link, idle_applies=idle_timeout)
        if not await self.admission.admit(record):
            return
        try:
            await self.relay.run(record)
        finally:
            self.links.pop(record.id, None)
            await self.relay.teardown(record)
            await link.send_close_quietly(Close(CloseCode.NORMAL, "link closed"))
            log.info("link %d closed (%s); %d operation(s) served",
                     record.id, record.end_reason or "ended", record.ops)

    def _on_ped_event(self, event: object) -> None:
        """The driver's ``on_event``: the relay's view of the link (``mode show``), then
        the event log."""
        self.relay.on_ped_event(event)
        self.events.on_event(event)

    # ------------------------------------------------------------------ control

    def status(self) -> dict[str, Any]:
        s = self.settings
        info = self.device.info
        return {
            "hostname": socket.gethostname(),
            "name": s.server_name,
            "ip": self.address[0] if self.address else s.ip,
            "port": self.address[1] if self.address else s.port,
            "pid": os.getpid(),
            "since": round(self.started, 3),
            "device": s.device,
            "device_connected": info is not None,
            "device_problem": "" if info is not None else self.device.problem,
            "model": info.model if info else "",
            "firmware": info.firmware if info else "",
            "serial": info.serial if info else "",
            "device_mode": info.mode if info else "",
            "idle_timeout": s.idle_timeout,
            "socket_read_rsp_timeout": s.socket_read_rsp_timeout,
            "keepalive_interval": s.keepalive_interval,
            "max_links": s.max_links,
            "link_versions": [LINK_VERSION_MIN, LINK_VERSION_MAX],
            "links": [r.describe(self.relay.hold_bound(r))
                      for r in sorted(self.links.values(), key=lambda r: r.id)],
        }
