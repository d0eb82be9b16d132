"""Issue 15, section 7, on real daemons: a raw peer on pedserver's port that takes the
PED and only keeps its link alive loses the PED at ``op_start_timeout`` (set to 3 s
here) while a real HSM waiting for the PED is served; a replayed HANDSHAKE_INIT that the
PED answers is logged as never confirmed, a real login as confirmed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from ped.link.messages import (
    Close,
    CloseCode,
    EndToEnd,
    Keepalive,
    LinkHello,
    OpBegin,
    OpEnd,
    OpGranted,
    decode,
    encode,
)
from ped.transport import PedBusy
from ped.wire.framing import encode_frame
from ped.wire.types import E2EType
from pedtools.testing import wait_for_log
from tests.attacks.raw import split_frames
from tests.attacks.rig import EvilRelay, Stack, running_stack
from tests.pedserver.fakes import short_tmp


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with short_tmp() as path, running_stack(path, server_config={"op_start_timeout": 3}) as s:
        yield s


def _frame(message: object) -> bytes:
    return encode_frame(encode(message))  # type: ignore[arg-type]


async def _read_messages(stream: trio.SocketStream, into: list[object]) -> None:
    data = bytearray()
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
            frames = split_frames(bytes(data))
            into[:] = [decode(f) for f in frames]
    except trio.BrokenResourceError:
        pass


async def test_a_hold_that_only_keeps_alive_loses_the_ped(stack: Stack) -> None:
    answers: list[object] = []
    async with trio.open_nursery() as nursery:
        raw = await trio.open_tcp_stream("127.0.0.1", stack.port)
        nursery.start_soon(_read_messages, raw, answers)
        await raw.send_all(_frame(LinkHello(client_name="pedclient on hsm1")) + _frame(OpBegin()))
        with trio.fail_after(10):
            while not any(isinstance(a, OpGranted) for a in answers):
                await trio.sleep(0.05)

        async def keepalives() -> None:
            try:
                while True:
                    await raw.send_all(_frame(Keepalive(1)))
                    await trio.sleep(1)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        nursery.start_soon(keepalives)
        # A real HSM is told "busy" and retries; it is served once the hold ends.
        with trio.fail_after(30):
            while True:
                try:
                    assert await stack.login() == stack.expected
                    break
                except PedBusy as busy:
                    assert "pedclient on hsm1" in str(busy)
                    await trio.sleep(0.2)
        # No timed assertion (the HSM's login can land within the same tick as the cut):
        # the close text and pedserver's log below say the hold ended at its 3 s bound.
        nursery.cancel_scope.cancel()
    await raw.aclose()
    [close] = [a for a in answers if isinstance(a, Close)]
    assert close.code is CloseCode.PROTOCOL_ERROR and "without sending it a frame" in close.text
    assert "held the PED for 3 s without sending it anything" in stack.server_log()


async def test_a_replayed_handshake_is_logged_as_never_confirmed(
    stack: Stack, nursery: trio.Nursery
) -> None:
    recorder = EvilRelay(stack.port)
    await recorder.start(nursery)
    assert await stack.login(recorder.port) == stack.expected
    await stack.wait_no_links()
    wait_for_log(stack.server_home / "pedserver.log", "the HSM side holds the channel")
    assert "never confirmed" not in stack.server_log()
    up, _ = recorder.connections[0]
    init = next(f for f in up.frames if f[3] == E2EType.HANDSHAKE_INIT)
    answers: list[object] = []
    async with trio.open_nursery() as inner:
        raw = await trio.open_tcp_stream("127.0.0.1", stack.port)
        inner.start_soon(_read_messages, raw, answers)
        await raw.send_all(_frame(LinkHello(client_name="replayer")) + _frame(OpBegin()))
        with trio.fail_after(10):
            while not any(isinstance(a, OpGranted) for a in answers):
                await trio.sleep(0.05)
        await raw.send_all(init)
        # The PED cannot tell: it asks for the orange key and answers the handshake.
        with trio.fail_after(30):
            while not any(isinstance(a, EndToEnd) for a in answers):
                await trio.sleep(0.05)
        await raw.send_all(_frame(OpEnd()) + _frame(Close(CloseCode.NORMAL, "done")))
        inner.cancel_scope.cancel()
    await raw.aclose()
    await stack.wait_no_links()
    wait_for_log(stack.server_home / "pedserver.log", "was never confirmed")
    assert "(replayer): the RPV handshake the PED answered at" in stack.server_log()
