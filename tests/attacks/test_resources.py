"""Attack 7 on a real pedserver: a slowloris peer and 1,000 half-open connections.

pedserver runs with ``hello_timeout = 2`` (the config file, as an administrator would
set it).  A slowloris peer sends a genuine link hello one byte per second: it is
dropped at the hello timeout with a refusal naming it, while a real session through
pedclient completes beside it.  1,000 connections from one address that never send a
byte: at most ``max_handshakes_per_source`` (8) wait for their hello, the rest are
refused at once ("too many connections from this address; retry later"), and the
refusals are logged as a few lines and a summary with the count, not a line each;
another address is welcomed at once during the flood; every one of them is closed by
the hello timeout at the latest, pedserver's resident memory grows by far less than
64 MiB (read from /proc/PID/status: a memory bound, not a timing one), and a real
session completes (an HSM retries a retriable refusal, as ``hsm ped connect`` does).
"""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest
import trio

from ped.link import connect_via_pedclient
from ped.link.errors import ConnectFailed
from ped.link.messages import LinkHello, LinkRefused, LinkWelcome, RefuseCode, decode, encode
from ped.wire.framing import encode_frame
from tests.attacks.raw import split_frames
from tests.attacks.rig import Stack, running_stack, vm_rss_kib
from tests.pedserver.fakes import short_tmp

FLOOD = 1000
MIB = 1024


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 4 * FLOOD) if hard != resource.RLIM_INFINITY else 4 * FLOOD
    if soft < wanted:
        # Raised before the daemons start: pedserver inherits the limit.
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        with short_tmp() as path, running_stack(path, server_config={"hello_timeout": 2}) as s:
            yield s
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _read_to_eof(stream: trio.SocketStream, into: list[bytes]) -> None:
    data = bytearray()
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        pass
    into.append(bytes(data))


async def _login_retrying(stack: Stack) -> bytes:
    """What an HSM does: a retriable refusal ("too many connections") is retried."""
    with trio.fail_after(60):
        while True:
            try:
                return await stack.login()
            except ConnectFailed as exc:
                assert exc.retriable and "retry later" in str(exc), exc
                await trio.sleep(0.5)


async def test_slowloris_is_dropped_at_the_hello_timeout(stack: Stack) -> None:
    hello = encode_frame(encode(LinkHello(client_name="slow")))
    answered: list[bytes] = []
    sent = 0
    async with trio.open_nursery() as nursery:
        slow = await trio.open_tcp_stream("127.0.0.1", stack.port)
        nursery.start_soon(_read_to_eof, slow, answered)
        # A real session completes while the slow peer holds its connection open.
        assert await stack.login() == stack.expected
        with trio.fail_after(60):
            try:
                for byte in hello[:-1]:  # never the last byte: the hello never completes
                    await slow.send_all(bytes([byte]))
                    sent += 1
                    if answered:
                        break
                    await trio.sleep(1)
            except trio.BrokenResourceError:
                pass
    await slow.aclose()
    [refused] = [decode(f) for f in split_frames(answered[0])]
    assert isinstance(refused, LinkRefused) and refused.code is RefuseCode.PROTOCOL_ERROR
    assert "no link hello in time" in refused.text
    assert sent < len(hello) - 1  # the timeout, not the end of our bytes, ended it
    assert "no hello within 2 s" in stack.server_log()
    assert await stack.login() == stack.expected


async def test_a_thousand_half_open_connections(stack: Stack) -> None:
    pid = stack.server_pid()
    before = vm_rss_kib(pid)
    answers: list[bytes] = []
    streams: list[trio.SocketStream] = []
    async with trio.open_nursery() as nursery:
        for _ in range(FLOOD):
            stream = await trio.open_tcp_stream("127.0.0.1", stack.port)
            streams.append(stream)
            nursery.start_soon(_read_to_eof, stream, answers)
        peak = vm_rss_kib(pid)
        # Another host is not refused: its hello is welcomed at once.
        other = await trio.open_tcp_stream("127.0.0.1", stack.port, local_address="127.0.0.2")
        await other.send_all(encode_frame(encode(LinkHello(client_name="other host"))))
        with trio.fail_after(5):
            welcome = await other.receive_some(65536)
        assert isinstance(decode(split_frames(welcome)[0]), LinkWelcome)
        await other.aclose()
        # A real session completes during the flood (retrying while every hello slot is
        # taken, as an HSM does).
        assert await _login_retrying(stack) == stack.expected
        peak = max(peak, vm_rss_kib(pid))
        with trio.fail_after(120):  # every half-open connection ends: timeouts fire
            while len(answers) < FLOOD:
                await trio.sleep(0.1)
    for stream in streams:
        await stream.aclose()
    after = vm_rss_kib(pid)
    assert max(peak, after) - before < 64 * MIB, (before, peak, after)
    reasons: dict[str, int] = {}
    for data in answers:
        for message in (decode(f) for f in split_frames(data)):
            assert isinstance(message, LinkRefused)
            reasons[message.text] = reasons.get(message.text, 0) + 1
    # Every connection was answered with its reason: at most max_handshakes_per_source
    # (8) wait for a hello at once, so most are refused at once; the waiting ones time out.
    assert set(reasons) == {"no link hello in time",
                            "too many connections from this address; retry later"}
    assert sum(reasons.values()) == FLOOD
    log = stack.server_log()
    assert "refused: too many connections in hello" in log and "no hello within 2 s" in log
    # A few lines and a summary with the count, not a line per refused connection.
    assert log.count("refused: too many connections in hello") < 50
    with trio.fail_after(30):  # the summary comes at the end of its interval (10 s)
        while "more 'too many connections in hello from one address' line(s)" not in log:
            await trio.sleep(0.2)
            log = stack.server_log()
    # and afterwards, at once
    assert await stack.login() == stack.expected
    transport = await connect_via_pedclient(stack.endpoint, "127.0.0.1", stack.port)
    await transport.aclose()
