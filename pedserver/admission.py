"""pedserver's door: a new connection's hello, the refusals, and the welcome of a link.

A connection must send a `LinkHello` within ``hello_timeout``; it is then a *link* (at
most ``max_links``) and is welcomed with the negotiated version, the shorter idle
timeout and what the PED is.  Half-open connections are bounded by ``max_handshakes``
in all and by ``max_handshakes_per_source`` per address, so that a flood of silent
sockets from one host never refuses another.  A connection that sends garbage gets a
LinkRefused naming the problem and is dropped.  Anyone can make the door log, so its
lines go through `pedserver.lograte.RepeatedLines` (a flood is one line per interval).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from ped.errors import RemoteProtocolError
from ped.link.connection import ConnectionLost, negotiate_version
from ped.link.errors import LinkClosed
from ped.link.messages import (
    LINK_VERSION_MAX,
    LINK_VERSION_MIN,
    DeviceSummary,
    LinkHello,
    LinkRefused,
    LinkWelcome,
    RefuseCode,
    fit_text,
)
from pedserver.links import LinkActivity, LinkRecord, source_of
from pedserver.lograte import RepeatedLines
from pedserver.settings import Settings

log = logging.getLogger("pedserver")


class Admission:
    """Turns connections into links (or refuses them, saying why)."""

    def __init__(
        self,
        settings: Settings,
        links: dict[int, LinkRecord],
        *,
        stopping: Callable[[], bool],
        device_summary: Callable[[], DeviceSummary],
        lines: RepeatedLines,
    ) -> None:
        self.settings = settings
        self.links = links
        self.handshaking = 0
        self.handshaking_from: dict[str, int] = {}  # source address -> connections in hello
        self.lines = lines
        self._stopping = stopping
        self._device_summary = device_summary

    async def admit(self, record: LinkRecord) -> bool:
        """Hello, then welcome: True once *record* is a link listed in ``links``."""
        source = source_of(record.peer)
        from_source = self.handshaking_from.get(source, 0)
        if from_source >= self.settings.max_handshakes_per_source:
            self.lines.log(
                "too many connections in hello from one address", logging.WARNING,
                "connection %d from %s refused: too many connections in hello from %s "
                "(max_handshakes_per_source %d)", record.id, record.peer, source,
                self.settings.max_handshakes_per_source,
            )
            await record.link.send_close_quietly(LinkRefused(
                RefuseCode.TOO_MANY_LINKS,
                "too many connections from this address; retry later",
            ))
            return False
        if self.handshaking >= self.settings.max_handshakes:
            self.lines.log("too many connections in hello", logging.WARNING,
                           "connection %d from %s refused: too many connections in hello",
                           record.id, record.peer)
            await record.link.send_close_quietly(
                LinkRefused(RefuseCode.TOO_MANY_LINKS, "too many connections; retry later")
            )
            return False
        self.handshaking += 1
        self.handshaking_from[source] = from_source + 1
        try:
            hello = await self._receive_hello(record)
        finally:
            self.handshaking -= 1
            left = self.handshaking_from[source] - 1
            if left:
                self.handshaking_from[source] = left
            else:
                del self.handshaking_from[source]
        if hello is None:
            return False
        return await self._welcome(record, hello)

    async def _receive_hello(self, record: LinkRecord) -> LinkHello | None:
        link = record.link
        try:
            with trio.move_on_after(self.settings.hello_timeout) as scope:
                event = await link.receive()
        except RemoteProtocolError as exc:
            self.lines.log("not a link hello", logging.WARNING,
                           "connection %d from %s dropped: not a Remote PED link hello (%s)",
                           record.id, record.peer, type(exc).__name__)
            await link.send_close_quietly(
                LinkRefused(RefuseCode.PROTOCOL_ERROR, fit_text(f"bad hello: {exc}"))
            )
            return None
        if scope.cancelled_caught:
            self.lines.log("no hello in time", logging.WARNING,
                           "connection %d from %s dropped: no hello within %d s",
                           record.id, record.peer, self.settings.hello_timeout)
            await link.send_close_quietly(
                LinkRefused(RefuseCode.PROTOCOL_ERROR, "no link hello in time")
            )
            return None
        if isinstance(event, LinkHello):
            return event
        if isinstance(event, ConnectionLost):
            self.lines.log("closed before its hello", logging.INFO,
                           "connection %d from %s closed before its hello",
                           record.id, record.peer)
        await link.aclose()
        return None

    def _refusal(self, hello: LinkHello, version: int | None) -> LinkRefused | None:
        if version is None:
            return LinkRefused(
                RefuseCode.UNSUPPORTED_VERSION,
                f"pedserver speaks link versions {LINK_VERSION_MIN}-{LINK_VERSION_MAX}, the "
                f"client {hello.min_version}-{hello.max_version}; upgrade the older side",
            )
        if self._stopping():
            return LinkRefused(RefuseCode.SHUTTING_DOWN, "pedserver is stopping")
        if len(self.links) >= self.settings.max_links:
            return LinkRefused(
                RefuseCode.TOO_MANY_LINKS,
                f"pedserver serves {self.settings.max_links} links already; retry later",
            )
        return None

    async def _welcome(self, record: LinkRecord, hello: LinkHello) -> bool:
        link = record.link
        version = negotiate_version(hello)
        refusal = self._refusal(hello, version)
        if refusal is not None:
            self.lines.log("link refused", logging.WARNING, "link from %s (%s) refused: %s",
                           record.peer, hello.client_name, refusal.text)
            await link.send_close_quietly(refusal)
            return False
        assert version is not None
        record.client_name = hello.client_name
        record.version = version
        record.idle_timeout = (
            min(hello.idle_timeout, self.settings.idle_timeout)
            if record.idle_applies
            else hello.idle_timeout  # the most the welcome may say; never enforced here
        )
        welcome = LinkWelcome(
            version,
            record.idle_timeout,
            self.settings.keepalive_interval,
            self.settings.server_name,
            self._device_summary(),
        )
        record.last_activity = record.last_heard = record.welcomed = trio.current_time()
        record.doing = LinkActivity.IDLE
        self.links[record.id] = record  # listed before the client can ask `mode show`
        try:
            await link.send(welcome)
        except LinkClosed:
            self.links.pop(record.id, None)
            log.info("connection %d from %s lost during the welcome", record.id, record.peer)
            await link.aclose()
            return False
        log.info("link %d open: from %s (%s), link version %d, idle timeout %d s",
                 record.id, record.peer, hello.client_name or "unnamed", version,
                 record.idle_timeout)
        return True
