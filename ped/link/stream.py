"""A trio shell around `LinkConnection`: one byte stream, one link.

`LinkStream` owns a ``trio.abc.Stream`` (TCP, Unix, or a ``trio.SSLStream`` for the
peer-to-peer mode: the relay code never cares which) and a sans-IO `LinkConnection`.
``send`` serialises writes under a lock; ``receive`` reads in bounded chunks until the
connection yields an event.  Stream failures become `LinkClosed`; protocol errors from
the peer stay `RemoteProtocolError`s, so the owner can answer them with a Close.
"""

from __future__ import annotations

import trio

from ped.link.connection import ConnectionLost, LinkConnection, LinkState
from ped.link.errors import LinkClosed
from ped.link.messages import Close, ConnectResult, LinkRefused, Message
from ped.wire.framing import NEED_DATA

RECEIVE_CHUNK = 16 * 1024
#: Longest a single frame may take to write before the peer counts as gone.
SEND_TIMEOUT = 60.0


class LinkStream:
    def __init__(
        self,
        stream: trio.abc.Stream,
        connection: LinkConnection,
        *,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        self.stream = stream
        self.connection = connection
        self.send_timeout = send_timeout
        self._send_lock = trio.Lock()
        self._closed = False
        self._final_sent = False

    @property
    def state(self) -> LinkState:
        return self.connection.state

    async def send(self, message: Message) -> None:
        """Send *message*; `LinkClosed` if the stream is gone."""
        data = self.connection.send(message)
        async with self._send_lock:
            try:
                with trio.fail_after(self.send_timeout):
                    await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                raise LinkClosed("the connection was lost while sending") from None
            except trio.TooSlowError:
                # A peer that does not read must not hold a task (or the PED) forever.
                await self.aclose()
                raise LinkClosed(
                    f"the peer did not take our data within {self.send_timeout:g} s"
                ) from None

    async def receive(self) -> Message | ConnectionLost:
        """The next event; raises `RemoteProtocolError` for garbage from the peer."""
        while True:
            event = self.connection.next_event()
            if event is not NEED_DATA:
                return event
            try:
                data = await self.stream.receive_some(RECEIVE_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            self.connection.receive_data(data)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    async def send_close_quietly(
        self, message: Close | LinkRefused | ConnectResult, *, timeout: float = 2.0
    ) -> None:
        """Best-effort last frame (a Close or a refusal), then close the stream; never
        raises.  Sent even after the peer broke the protocol, so it learns why."""
        if not self._final_sent and not self._closed:
            self._final_sent = True
            with trio.move_on_after(timeout) as scope:
                scope.shield = True
                try:
                    data = self.connection.send_final(message)
                    async with self._send_lock:
                        await self.stream.send_all(data)
                except Exception:  # noqa: S110 - the peer may be gone already; closing anyway
                    pass
        # Another task may be writing the last words right now: let it finish first.
        with trio.move_on_after(timeout) as scope:
            scope.shield = True
            async with self._send_lock:
                pass
        await self.aclose()
