"""An in-memory FrameTransport pair over trio.testing.memory_stream_pair, and a tiny PED.

The PED here is deliberately small: it drives `PedSideSession` from a script of
answers so the HSM-side API can be tested without the emulated PED package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import trio
import trio.testing

from ped.channel import PedInfo, RefuseReason
from ped.errors import PedError
from ped.ops import ErrorCode, PedSideSession
from ped.ops import events as ev
from ped.ops.messages import NoticeKind
from ped.transport import PedBusy, TransportClosed
from ped.wire.framing import NEED_DATA, Frame, FrameDecoder, encode_frame
from ped.wire.types import E2E_TYPES


class PedLock:
    """The PED's one-operation-at-a-time lock, shared by the sessions of one PED."""

    def __init__(self) -> None:
        self.lock = trio.Semaphore(1)  # no owner: any task may release


class MemoryFrameTransport:
    """A FrameTransport over one end of a memory stream (records what it sends)."""

    def __init__(self, stream: trio.abc.Stream, ped_lock: PedLock | None = None) -> None:
        self._stream = stream
        self._decoder = FrameDecoder(accepted=E2E_TYPES)
        self._ped_lock = ped_lock or PedLock()
        self._holding = False
        self.sent: list[bytes] = []
        self.operations = 0

    async def send(self, frame: Frame) -> None:
        data = encode_frame(frame)
        self.sent.append(data)
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise TransportClosed("memory stream closed") from None

    async def receive(self) -> Frame:
        while True:
            frame = self._decoder.next_frame()
            if frame is not NEED_DATA:
                return frame
            try:
                data = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise TransportClosed("memory stream closed") from None
            if not data:
                self._decoder.check_eof()
                raise TransportClosed("the peer closed the memory stream")
            self._decoder.feed(data)

    async def begin_operation(self, *, wait: float = 0.0) -> None:
        try:
            self._ped_lock.lock.acquire_nowait()
        except trio.WouldBlock:
            with trio.move_on_after(wait) as scope:
                await self._ped_lock.lock.acquire()
            if scope.cancelled_caught:
                raise PedBusy(f"the PED stayed busy for {wait} s") from None
        self._holding = True
        self.operations += 1

    async def end_operation(self) -> None:
        if self._holding:
            self._holding = False
            self._ped_lock.lock.release()

    async def aclose(self) -> None:
        await self._stream.aclose()


def transport_pair(
    ped_lock: PedLock | None = None,
) -> tuple[MemoryFrameTransport, MemoryFrameTransport]:
    a, b = trio.testing.memory_stream_pair()
    return MemoryFrameTransport(a, ped_lock), MemoryFrameTransport(b)


Answer = Callable[[PedSideSession, Any], Any]


@attrs.define
class TinyPed:
    """Drives a PedSideSession; *script* maps request event types to async answer functions."""

    rpv: bytes | None
    script: dict[type, Any] = attrs.field(factory=dict)
    refuse_with: RefuseReason | None = None
    events: list[object] = attrs.field(factory=list)
    session: PedSideSession = attrs.field(
        factory=lambda: PedSideSession(ped_info=PedInfo("tinyped", "T-1", "0.1"))
    )
    cancelled: trio.Event = attrs.field(factory=trio.Event)
    transport_error: PedError | None = None

    async def run(self, transport: MemoryFrameTransport) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    frame = await transport.receive()
                except TransportClosed:
                    self.events.extend(self.session.receive_eof())
                    nursery.cancel_scope.cancel()
                    return
                except PedError as exc:  # the frame layer refused the bytes
                    self.transport_error = exc
                    self.session.receive_eof()
                    nursery.cancel_scope.cancel()
                    return
                for event in self.session.receive_frame(frame):
                    self.events.append(event)
                    await self._handle(event, nursery, transport)
                await self._flush(transport)
                if not self.session.is_open:
                    return

    async def _flush(self, transport: MemoryFrameTransport) -> None:
        for out in self.session.frames_to_send():
            await transport.send(out)

    async def _handle(
        self, event: object, nursery: trio.Nursery, transport: MemoryFrameTransport
    ) -> None:
        session = self.session
        if isinstance(event, ev.RpvRequired):
            if self.refuse_with is not None:
                session.refuse(self.refuse_with, "scripted refusal")
            else:
                assert self.rpv is not None
                self.events.append(session.supply_rpv(self.rpv))
        elif isinstance(event, ev.CancelRequested):
            self.cancelled.set()
        elif type(event) in self.script:
            answer = self.script[type(event)]

            async def serve() -> None:
                await answer(self, event)
                await self._flush(transport)

            nursery.start_soon(serve)


async def answer_secret(ped: TinyPed, event: ev.ReadSecretRequested) -> None:
    ped.session.send_notice(NoticeKind.INSERT_KEY, 1, 1, "insert key")
    ped.session.answer_read_secret(bytes([7]) * 32, keyset_id=event.keyset_id or bytes(16))


async def answer_after_cancel(ped: TinyPed, _event: object) -> None:
    await ped.cancelled.wait()
    ped.session.answer_error(ErrorCode.CANCELLED, "cancelled by the HSM")


async def answer_never(_ped: TinyPed, _event: object) -> None:
    await trio.sleep_forever()


def answer_error(code: ErrorCode) -> Answer:
    async def answer(ped: TinyPed, _event: object) -> None:
        ped.session.answer_error(code, "scripted")

    return answer


async def answer_show(ped: TinyPed, _event: object) -> None:
    ped.session.answer_show()


async def answer_imprint(ped: TinyPed, event: ev.ImprintRequested) -> None:
    if event.new_secret is None:
        ped.session.answer_imprint(
            keyset_id=bytes(16), m=1, n=1, pin=False, copies=0, reused_secret=bytes([9]) * 32
        )
    else:
        ped.session.answer_imprint(
            keyset_id=bytes(16), m=2, n=3, pin=True, copies=3, secret=bytes([8]) * 32
        )
