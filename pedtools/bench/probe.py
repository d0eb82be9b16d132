"""What the HSM-side jobs time with: a transport noting frame sizes, the relay baseline's bounce."""

from __future__ import annotations

from ped.transport import FrameTransport
from ped.wire.framing import Frame
from ped.wire.types import E2E_RANGE

HSM_SERIAL = "150001"
SEALED = 0x23


class Recorder:
    """A FrameTransport wrapper noting the payload size of each end-to-end frame."""

    def __init__(self, inner: FrameTransport) -> None:
        self.inner = inner
        self.sent: list[int] = []
        self.received: list[int] = []

    async def send(self, frame: Frame) -> None:
        self.sent.append(len(frame.payload))
        await self.inner.send(frame)

    async def receive(self) -> Frame:
        frame = await self.inner.receive()
        self.received.append(len(frame.payload))
        return frame

    async def begin_operation(self, *, wait: float = 0.0) -> None:
        await self.inner.begin_operation(wait=wait)

    async def end_operation(self) -> None:
        await self.inner.end_operation()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def bounce(transport: FrameTransport, request: bytes, replies: int) -> None:
    """The baseline of one PED operation: the same link messages, no crypto, no PED."""
    await transport.begin_operation(wait=5.0)
    try:
        await transport.send(Frame(SEALED, request))
        for _ in range(replies):
            frame = await transport.receive()
            assert frame.type in E2E_RANGE
    finally:
        await transport.end_operation()
