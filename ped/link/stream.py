"""A trio shell around `LinkConnection`: one byte stream, one link.

`LinkStream` owns a ``trio.abc.Stream`` (TCP, Unix, or a ``trio.SSLStream`` for the
peer-to-peer mode: the relay code never cares which) and a sans-IO `LinkConnection`.
``send`` serialises writes under a lock; ``receive`` reads in bounded chunks until the
connection yields an event.  Stream failures become `LinkClosed`; protocol errors from
the peer stay `RemoteProtocolError`s, so the owner can answer them with a Close.

A frame whose first bytes came must be whole within ``frame_timeout``: a length field
that promises more than the peer sends (one flipped bit on the way) would otherwise
swallow the frames behind it (keepalives included) until some other timeout ended the
link for a reason nobody could guess.  It fails at that timeout, saying so.
"""

from __future__ import annotations

import trio

from ped.errors import TruncatedFrame
from ped.link.connection import ConnectionLost, LinkConnection, LinkState, Undelivered
from ped.link.errors import LinkClosed
from ped.link.messages import Close, ConnectResult, LinkRefused, Message
from ped.wire.framing import NEED_DATA

RECEIVE_CHUNK = 16 * 1024
#: Longest a single frame may take to write before the peer counts as gone.
SEND_TIMEOUT = 60.0
#: Longest the rest of a frame may take to arrive once its first bytes came (a whole
#: frame is at most 64 KiB: seconds on any working link).
FRAME_TIMEOUT = 10.0


class LinkStream:
    def __init__(
        self,
        stream: trio.abc.Stream,
        connection: LinkConnection,
        *,
        send_timeout: float = SEND_TIMEOUT,
        frame_timeout: float = FRAME_TIMEOUT,
    ) -> None:
        self.stream = stream
        self.connection = connection
        self.send_timeout = send_timeout
        self.frame_timeout = frame_timeout
        self._frame_started: float | None = None  # trio clock: first bytes of a frame
        self._send_lock = trio.Lock()
        self._closed = False
        self._final_sent = False

    @property
    def state(self) -> LinkState:
        return self.connection.state

    async def send(self, message: Message) -> None:
        """Send *message*; `LinkClosed` if the stream is gone."""
        await self._write(self.connection.send(message))

    async def _write(self, data: bytes) -> None:
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

    async def send_many(self, messages: list[Message]) -> None:
        """Send *messages* in one write (an OpBegin and the frames pipelined behind it);
        `LinkClosed` if the stream is gone; `LocalProtocolError` before any byte is written."""
        data = b"".join(self.connection.send(message) for message in messages)
        await self._write(data)

    async def receive(self) -> Message | ConnectionLost | Undelivered:
        """The next event; raises `RemoteProtocolError` for garbage from the peer."""
        while True:
            event = self.connection.next_event()
            if event is not NEED_DATA:
                self._frame_started = None
                return event
            if self.connection.buffered:
                data = await self._receive_rest_of_frame()
            else:
                self._frame_started = None
                data = await self._receive_some()
            self.connection.receive_data(data)

    async def _receive_some(self) -> bytes | bytearray:
        try:
            return await self.stream.receive_some(RECEIVE_CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return b""

    async def _receive_rest_of_frame(self) -> bytes | bytearray:
        """The next bytes of a frame begun, or `TruncatedFrame` past ``frame_timeout``."""
        now = trio.current_time()
        if self._frame_started is None:
            self._frame_started = now
        with trio.move_on_at(self._frame_started + self.frame_timeout):
            return await self._receive_some()
        raise TruncatedFrame(
            f"a frame was still incomplete {self.frame_timeout:g} s after its first bytes "
            f"({self.connection.buffered} bytes came, its length field promises more): a "
            "length corrupted on the way, or a stalled peer"
        )

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
