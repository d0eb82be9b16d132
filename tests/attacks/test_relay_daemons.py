"""Attacks 2, 3 and 4 through real daemons: a malicious relay between pedclient and pedserver.

The relay (`EvilRelay`) sits on the network hop, where an attacker really sits.  It
records a whole legitimate login (handshake with the orange key, then a blue key read)
and replays it to pedserver (and so to the PED), plays pedserver's recorded answers back
to a pedclient (and so to the HSM), flips one bit at a sample of positions in each
direction, drops, duplicates and reorders frames, and cuts the stream mid-frame.

Every attack must end, on the HSM side, in a typed `PedError` with a clear message; the
PED must read no blue key for it (pedserver logs each key the PED reads), pedserver must
forget the link (the PED is idle again), and a fresh legitimate session through the same
daemons afterwards must get the right secret.  ``tests/adversarial/`` runs every bit
position and every frame in memory; this file proves the same on real processes and
sockets.
"""

from __future__ import annotations

import pytest
import trio

from ped.channel.errors import HandshakeFailed
from ped.errors import PedError
from ped.link.messages import LinkType
from ped.ops import OperationTimeout
from ped.transport import TransportError
from ped.wire.framing import HEADER_SIZE, NEED_DATA
from ped.wire.types import CloseCode, E2EType
from tests.attacks.rig import CUT, Cut, EvilRelay, Stack

SEALED = int(E2EType.SEALED)


async def _attacked_login(stack: Stack, relay: EvilRelay, **kwargs: object) -> PedError:
    """A login through *relay* must fail with a typed error (returned for inspection)."""
    blue_reads = stack.server_log().count("key-read blue")
    with pytest.raises(PedError) as caught:
        await stack.login(relay.port, **kwargs)  # type: ignore[arg-type]
    error = caught.value
    assert str(error), "the refusal must say what went wrong"
    await stack.wait_no_links()  # pedserver ended that link: the PED is idle again
    # The PED read no blue key for a session that was tampered with before the read
    # request reached it intact (callers that tamper later check for themselves).
    assert stack.server_log().count("key-read blue") <= blue_reads + 1
    return error


async def _still_served(stack: Stack) -> None:
    assert await stack.login() == stack.expected


def _index_of(frames: list[bytes], type_: int, nth: int = 0) -> int:
    return [i for i, f in enumerate(frames) if f[3] == type_][nth]


async def _record(stack: Stack, nursery: trio.Nursery) -> tuple[list[bytes], list[bytes],
                                                                 bytes, bytes]:
    recorder = EvilRelay(stack.port)
    await recorder.start(nursery)
    assert await stack.login(recorder.port) == stack.expected
    await stack.wait_no_links()
    up, down = recorder.connections[0]
    return up.frames, down.frames, bytes(up.received), bytes(down.received)


async def test_recorded_session_replayed_to_pedserver_and_the_ped(
    stack: Stack, nursery: trio.Nursery
) -> None:
    _, _, recorded_up, _ = await _record(stack, nursery)
    blue_reads = stack.server_log().count("key-read blue")
    answer = bytearray()
    with trio.fail_after(30):
        attacker = await trio.open_tcp_stream("127.0.0.1", stack.port)
        await attacker.send_all(recorded_up)
        try:
            while data := await attacker.receive_some(65536):
                answer += data
        except trio.BrokenResourceError:
            pass
        await attacker.aclose()
    await stack.wait_no_links()
    # The PED answered the replayed handshake with a fresh ephemeral key, so the replayed
    # sealed read request did not open: no blue key was read, no secret went out.
    assert stack.server_log().count("key-read blue") == blue_reads
    assert stack.expected not in answer
    log = stack.server_log()
    assert "Traceback" not in log
    await _still_served(stack)


async def test_recorded_answers_replayed_to_the_hsm(stack: Stack, nursery: trio.Nursery) -> None:
    _, recorded_down, _, _ = await _record(stack, nursery)

    answers = list(recorded_down)

    async def fake_pedserver(conn: trio.SocketStream) -> None:
        # Answer each request with what the real pedserver answered it last time.
        buffer = bytearray()
        with trio.move_on_after(30):
            while data := await conn.receive_some(65536):
                buffer += data
                while len(buffer) >= HEADER_SIZE:
                    size = HEADER_SIZE + int.from_bytes(buffer[4:8], "big")
                    if len(buffer) < size:
                        break
                    type_ = buffer[3]
                    del buffer[:size]
                    asks = type_ in (LinkType.HELLO, LinkType.OP_BEGIN) or 0x20 <= type_ < 0x30
                    if asks and answers:
                        await conn.send_all(answers.pop(0))

    [listener] = await nursery.start(
        lambda task_status: trio.serve_tcp(fake_pedserver, 0, host="127.0.0.1",
                                           task_status=task_status))
    port = listener.socket.getsockname()[1]
    with pytest.raises(HandshakeFailed) as caught:
        await stack.login(port)
    assert "RPV" in str(caught.value) or "orange" in str(caught.value).lower()
    await _still_served(stack)


#: Positions to flip, as (which frame, offset in the frame); offsets past the end mean
#: the frame's last byte.  The magic, version, type and the top of the length (a length
#: over the maximum) in the header; the start, middle and end of each payload.
def _sample(frames: list[bytes]) -> list[int]:
    positions: list[int] = []
    start = 0
    for frame in frames:
        payload = len(frame) - HEADER_SIZE
        offsets = [0, 2, 3, 4] if not positions else [3]
        if 0x20 <= frame[3] < 0x30:
            offsets += sorted({HEADER_SIZE, HEADER_SIZE + payload // 2, len(frame) - 1})
        elif payload:
            offsets.append(HEADER_SIZE + payload // 2)
        positions += [start + o for o in offsets]
        start += len(frame)
    return positions


def _flip_at(position: int, bit: int) -> object:
    seen = 0

    def mutate(_index: int, frame: bytes) -> bytes:
        nonlocal seen
        out = bytearray(frame)
        if seen <= position < seen + len(frame):
            offset, use = position - seen, bit
            if offset == 3 and use == 5 and frame[3] < 0x20:
                # 0x20 turns a link frame into an end-to-end one: for the waiting HSM that
                # is a link answer that never came, which the drop tests already time.
                use = 6
            out[offset] ^= 1 << use
        seen += len(frame)
        return bytes(out)

    return mutate


@pytest.mark.parametrize("direction", ["up", "down"])
async def test_one_bit_flipped_at_sampled_positions(
    stack: Stack, nursery: trio.Nursery, direction: str
) -> None:
    up_frames, down_frames, _, _ = await _record(stack, nursery)
    frames = up_frames if direction == "up" else down_frames
    relay = EvilRelay(stack.port)
    await relay.start(nursery)
    outcomes: dict[str, int] = {}
    # Counted over the whole run, not per login: a login whose request was pipelined behind
    # its hold (link version 3) may have its key read by the PED after the link is gone,
    # so that read's event can reach pedserver's log during the next login.
    blue_reads = last_reads = stack.server_log().count("key-read blue")
    for n, position in enumerate(_sample(frames)):
        mutator = _flip_at(position, n % 8)
        if direction == "up":
            relay.up_mutator = mutator  # type: ignore[assignment]
        else:
            relay.down_mutator = mutator  # type: ignore[assignment]
        try:
            # A PED that cannot open a request ends its session without a word (the
            # channel is broken, so it cannot say so sealed); pedserver closes the link
            # after a grace period (see the test below), or the HSM's short operation
            # timeout here fires first: either way a typed, uncounted error.
            secret = await stack.login(relay.port, **_login_kwargs())  # type: ignore[arg-type]
        except PedError as error:
            assert str(error)
            outcomes[type(error).__name__] = outcomes.get(type(error).__name__, 0) + 1
        else:
            # Only a flip the protocol may ignore (the HSM's goodbye, the final close,
            # the close text) lets a session finish: then the secret is the true one.
            assert secret == stack.expected
            outcomes["completed"] = outcomes.get("completed", 0) + 1
        await stack.wait_no_links()
        # at most one key read per login so far (a flipped bit never makes the PED read
        # twice), and within this login at most its own plus the last one's late event
        reads = stack.server_log().count("key-read blue")
        assert reads <= blue_reads + n + 1 and reads <= last_reads + 2
        last_reads = reads
    assert sum(v for k, v in outcomes.items() if k != "completed") > len(frames)
    await _still_served(stack)


def _login_kwargs() -> dict[str, object]:
    return {"op_timeout": 2, "cancel_grace": 1}


@pytest.mark.parametrize("direction", ["up", "down"])
async def test_sealed_frame_dropped(stack: Stack, nursery: trio.Nursery, direction: str) -> None:
    up_frames, down_frames, _, _ = await _record(stack, nursery)
    relay = EvilRelay(stack.port)
    await relay.start(nursery)
    target = _index_of(up_frames if direction == "up" else down_frames, SEALED)

    def drop(index: int, frame: bytes) -> bytes:
        return b"" if index == target else frame

    setattr(relay, f"{direction}_mutator", drop)
    error = await _attacked_login(stack, relay, **_login_kwargs())
    # The read request (or its answer) never arrived: the operation times out, typed.
    assert isinstance(error, OperationTimeout | TransportError), repr(error)
    await _still_served(stack)


@pytest.mark.parametrize("direction", ["up", "down"])
@pytest.mark.parametrize("kind", [E2EType.HANDSHAKE_INIT, E2EType.SEALED])
async def test_frame_duplicated(
    stack: Stack, nursery: trio.Nursery, direction: str, kind: E2EType
) -> None:
    up_frames, down_frames, _, _ = await _record(stack, nursery)
    frames = up_frames if direction == "up" else down_frames
    if kind is E2EType.HANDSHAKE_INIT and direction == "down":
        kind = E2EType.HANDSHAKE_RESPONSE
    target = _index_of(frames, int(kind))
    relay = EvilRelay(stack.port)
    await relay.start(nursery)

    def twice(index: int, frame: bytes) -> bytes:
        return frame * 2 if index == target else frame

    setattr(relay, f"{direction}_mutator", twice)
    blue_reads = stack.server_log().count("key-read blue")
    if kind is E2EType.SEALED:
        # The copy may arrive after the answer was taken (the HSM then has the true
        # secret and says goodbye) or before (a typed refusal); the PED serves the read
        # once either way: the copy opens nothing.
        try:
            secret = await stack.login(relay.port, **_login_kwargs())  # type: ignore[arg-type]
        except PedError as error:
            assert str(error)
        else:
            assert secret == stack.expected
        await stack.wait_no_links()
        assert stack.server_log().count("key-read blue") <= blue_reads + 1
    else:
        await _attacked_login(stack, relay, **_login_kwargs())
    await _still_served(stack)


async def test_op_end_and_op_begin_swapped(stack: Stack, nursery: trio.Nursery) -> None:
    """The HSM sends OP_END and the next OP_BEGIN back to back: the relay swaps them."""
    up_frames, _, _, _ = await _record(stack, nursery)
    end = _index_of(up_frames, int(LinkType.OP_END))
    assert up_frames[end + 1][3] == LinkType.OP_BEGIN
    held: list[bytes] = []
    relay = EvilRelay(stack.port)
    await relay.start(nursery)

    def swap(index: int, frame: bytes) -> bytes:
        if index == end:
            held.append(frame)
            return b""
        if index == end + 1:
            return frame + held.pop()
        return frame

    relay.up_mutator = swap
    await _attacked_login(stack, relay, **_login_kwargs())
    await _still_served(stack)


@pytest.mark.parametrize(("direction", "early", "late"), [
    ("up", E2EType.HANDSHAKE_INIT, E2EType.SEALED),
    ("down", E2EType.HANDSHAKE_RESPONSE, E2EType.SEALED),
])
async def test_an_earlier_frame_of_the_session_delivered_in_a_later_place(
    stack: Stack, nursery: trio.Nursery, direction: str, early: E2EType, late: E2EType
) -> None:
    """Each direction is strictly request/answer, so a relay reorders by delivering a
    frame it saw earlier in this very session where a later one belongs."""
    relay = EvilRelay(stack.port)
    await relay.start(nursery)
    seen: dict[int, bytes] = {}

    def reorder(_index: int, frame: bytes) -> bytes:
        if frame[3] == early:
            seen[early] = frame
        if frame[3] == late and early in seen:
            return seen[early]
        return frame

    setattr(relay, f"{direction}_mutator", reorder)
    await _attacked_login(stack, relay, **_login_kwargs())
    await _still_served(stack)


@pytest.mark.parametrize("direction", ["up", "down"])
@pytest.mark.parametrize("kind", [E2EType.HANDSHAKE_INIT, E2EType.SEALED])
async def test_stream_cut_mid_frame(
    stack: Stack, nursery: trio.Nursery, direction: str, kind: E2EType
) -> None:
    up_frames, down_frames, _, _ = await _record(stack, nursery)
    frames = up_frames if direction == "up" else down_frames
    if kind is E2EType.HANDSHAKE_INIT and direction == "down":
        kind = E2EType.HANDSHAKE_RESPONSE
    target = _index_of(frames, int(kind))
    relay = EvilRelay(stack.port)
    await relay.start(nursery)

    def cut(index: int, frame: bytes) -> object:
        return Cut(frame[: len(frame) // 2]) if index == target else frame

    setattr(relay, f"{direction}_mutator", cut)
    error = await _attacked_login(stack, relay, **_login_kwargs())
    # The network went away: a retriable transport error, never a counted failure.
    assert isinstance(error, TransportError) and error.retriable, repr(error)
    assert error.code in (CloseCode.SERVER_GONE, CloseCode.PROTOCOL_ERROR), repr(error)  # type: ignore[attr-defined]
    assert "retry" in str(error)
    if direction == "up":
        assert "unfinished frame" in stack.server_log()
    await _still_served(stack)


async def test_cut_before_anything_is_relayed(stack: Stack, nursery: trio.Nursery) -> None:
    relay = EvilRelay(stack.port)
    await relay.start(nursery)
    relay.up_mutator = lambda index, frame: CUT
    with pytest.raises(PedError) as caught:
        await stack.login(relay.port)
    assert "pedserver" in str(caught.value)
    await _still_served(stack)


async def test_a_request_the_ped_cannot_open_closes_the_link_for_the_hsm(
    stack: Stack, nursery: trio.Nursery
) -> None:
    # The PED cannot answer a tampered sealed request (its channel is broken, so it cannot
    # even say so sealed) and ends the session. pedserver sees the link still holding the
    # PED and tells the HSM with a Close, a retriable transport error, instead of leaving
    # it to wait for its operation timeout (kept long here: 50 s, under fail_after(60)).
    up_frames, _, _, _ = await _record(stack, nursery)
    request = _index_of(up_frames, SEALED)  # the read request, the first sealed frame up
    relay = EvilRelay(stack.port)
    await relay.start(nursery)

    def flip_request(index: int, frame: bytes) -> bytes:
        if index != request:
            return frame
        out = bytearray(frame)
        out[HEADER_SIZE + (len(frame) - HEADER_SIZE) // 2] ^= 0x10
        return bytes(out)

    relay.up_mutator = flip_request  # type: ignore[assignment]
    error = await _attacked_login(stack, relay, op_timeout=50, cancel_grace=1)
    assert isinstance(error, TransportError), repr(error)
    assert not isinstance(error, OperationTimeout)
    assert "PED ended the end-to-end session" in str(error), str(error)
    assert "PED ended the session during an operation" in stack.server_log()
    await _still_served(stack)


async def test_an_unasked_op_granted_from_pedserver_is_blamed_on_pedserver(
    stack: Stack, nursery: trio.Nursery
) -> None:
    # A "pedserver" that grants the PED to nobody: pedclient must close the link naming
    # pedserver's protocol error, not report that the HSM went away.
    from ped.link import connect_via_pedclient
    from ped.link.connection import Hop, LinkConnection, Side
    from ped.link.messages import LinkHello, LinkWelcome, OpGranted

    async def rogue_pedserver(conn: trio.SocketStream) -> None:
        link = LinkConnection(Hop.REMOTE, Side.RESPONDER)
        with trio.move_on_after(30):
            hello: object = NEED_DATA
            while hello is NEED_DATA:
                link.receive_data(await conn.receive_some(65536))
                hello = link.next_event()
            assert isinstance(hello, LinkHello)
            await conn.send_all(link.send(LinkWelcome(1, hello.idle_timeout)))
            # Bypass the state machine: exactly what a broken pedserver would put on the wire.
            from ped.link.messages import encode
            from ped.wire.framing import encode_frame

            await conn.send_all(encode_frame(encode(OpGranted())))
            while await conn.receive_some(65536):
                pass

    [listener] = await nursery.start(
        lambda task_status: trio.serve_tcp(rogue_pedserver, 0, host="127.0.0.1",
                                           task_status=task_status))
    port = listener.socket.getsockname()[1]
    transport = await connect_via_pedclient(stack.endpoint, "127.0.0.1", port)
    try:
        with trio.fail_after(30), pytest.raises(TransportError) as caught:
            await transport.receive()
    finally:
        await transport.aclose()
    message = str(caught.value)
    assert "protocol error" in message and f"pedserver at 127.0.0.1:{port}" in message, message
    with trio.fail_after(30):
        while stack.client_log().count(f"127.0.0.1:{port}") < 2:  # opened, then closed
            await trio.sleep(0.05)
    lines = [line for line in stack.client_log().splitlines() if f"127.0.0.1:{port}" in line]
    assert not any("the HSM went away" in line for line in lines), lines
    await _still_served(stack)
