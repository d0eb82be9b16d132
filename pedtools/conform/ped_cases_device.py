"""Cases 1.x of ``pedconform ped``: the device transport (docs/protocol/device.md).

Each case opens its own raw connection (`ped_wire.RawLink`): the ones that send a
broken frame expect the PED to end the connection, as device.md section 5 says
("a receiver that sees a malformed envelope stops").
"""

from __future__ import annotations

import struct

import trio

from ped.device.messages import (
    DEVICE_PROTOCOL_VERSION,
    DeviceErrorCode,
    DeviceErrorMessage,
    Hello,
    Info,
    Ping,
    Pong,
    SessionClose,
    SessionCloseReason,
    SessionData,
    SessionOpen,
    SessionOpened,
    encode_message,
)
from ped.wire.framing import Frame
from pedtools.conform.ped_context import Case, Context, Verdict, failed, passed
from pedtools.conform.ped_wire import Closed, NoAnswer, RawLink

#: At most this many sessions are opened to find the PED's limit.
SESSION_PROBE_LIMIT = 64
_SEC = "device.md 3"


def _name(message: object) -> str:
    if isinstance(message, Closed):
        return "the end of the connection"
    if isinstance(message, DeviceErrorMessage):
        return f"DEVICE_ERROR {getattr(message.code, 'name', message.code)}"
    return type(message).__name__


async def _ready(ctx: Context) -> RawLink:
    link = await ctx.raw()
    await link.hello(ctx.settings.timeout)
    return link


async def hello_info(ctx: Context) -> Verdict:
    link = await ctx.raw()
    info = await link.hello(ctx.settings.timeout)
    ctx.info = info
    seen = (f"INFO version {info.version}, {info.model} {info.firmware} serial "
            f"{info.serial}, mode {info.mode}, {info.max_sessions} sessions")
    problems = []
    if info.version != DEVICE_PROTOCOL_VERSION:
        problems.append(f"version {info.version} is not the one offered")
    if info.mode not in ("remote", "local"):
        problems.append(f"mode {info.mode!r} is neither remote nor local")
    if info.max_sessions < 1:
        problems.append("max_sessions is 0")
    return failed(f"{seen}; {'; '.join(problems)}") if problems else passed(seen)


async def unsupported_version(ctx: Context) -> Verdict:
    link = await ctx.raw()
    await link.send(Hello(DEVICE_PROTOCOL_VERSION + 1, DEVICE_PROTOCOL_VERSION + 4, "pedconform"))
    answer = await link.next_message(ctx.settings.timeout)
    if isinstance(answer, DeviceErrorMessage) and (
        answer.code == DeviceErrorCode.UNSUPPORTED_VERSION
    ):
        return passed("DEVICE_ERROR UNSUPPORTED_VERSION")
    return failed(f"{_name(answer)}")


async def ping_pong(ctx: Context) -> Verdict:
    link = await _ready(ctx)
    await link.send(Ping(0x0123456789ABCDEF))
    answer = await link.next_message(ctx.settings.timeout)
    if isinstance(answer, Pong) and answer.nonce == 0x0123456789ABCDEF:
        return passed("PONG with the same nonce")
    if isinstance(answer, Pong):
        return failed(f"PONG with another nonce ({answer.nonce:#x})")
    return failed(_name(answer))


async def session_limit(ctx: Context) -> Verdict:
    link = await _ready(ctx)
    limit = ctx.info.max_sessions if ctx.info is not None else SESSION_PROBE_LIMIT
    probe = min(limit, SESSION_PROBE_LIMIT)
    for session in range(1, probe + 1):
        await link.send(SessionOpen(session))
        answer = await link.next_message(ctx.settings.timeout)
        if not isinstance(answer, SessionOpened) or answer.session != session:
            return failed(f"session {session} of the {limit} announced: {_name(answer)}")
    if probe < limit:
        return passed(f"{probe} sessions opened (the PED announces {limit}; not all tried)")
    await link.send(SessionOpen(probe + 1))
    answer = await link.next_message(ctx.settings.timeout)
    if isinstance(answer, SessionClose) and answer.reason == SessionCloseReason.TOO_MANY_SESSIONS:
        return passed(f"{limit} sessions opened; one more: SESSION_CLOSE TOO_MANY_SESSIONS")
    return failed(f"{limit} sessions opened; one more: {_name(answer)}")


async def _refuses(ctx: Context, data: bytes, what: str) -> Verdict:
    """After *data*, the PED must stop: DEVICE_ERROR PROTOCOL_ERROR and/or the end."""
    link = await _ready(ctx)
    seen: list[str] = []
    try:
        await link.send_bytes(data)
        await link.send(Ping(7))  # a PED that skipped the bad frame answers this
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # the PED hung up already: what it said before is read below
    try:
        while True:
            answer = await link.receive(ctx.settings.timeout)
            if isinstance(answer, Closed):
                seen.append("the end of the connection")
                break
            if isinstance(answer, DeviceErrorMessage):
                seen.append(f"DEVICE_ERROR {answer.code.name}")
                continue
            seen.append(_name(answer))
            if isinstance(answer, Pong):
                return failed(f"{what}: the PED went on ({', '.join(seen)})")
    except NoAnswer:
        return failed(f"{what}: {', '.join(seen) or 'nothing'}; the connection stayed open")
    errors = [s for s in seen if s.startswith("DEVICE_ERROR") and "PROTOCOL_ERROR" not in s]
    if errors:
        return failed(f"{what}: {', '.join(seen)}")
    return passed(f"{what}: {', '.join(seen)}")


def _ping_bytes() -> bytes:
    return encode_message(Ping(7))


async def bad_magic(ctx: Context) -> Verdict:
    return await _refuses(ctx, b"XP" + _ping_bytes()[2:], "magic 'XP'")


async def bad_length(ctx: Context) -> Verdict:
    header = b"RP" + bytes([1, 0x38]) + struct.pack(">I", 65537)
    return await _refuses(ctx, header + bytes(64), "length 65537")


async def bad_type(ctx: Context) -> Verdict:
    return await _refuses(ctx, b"RP\x01\x3f" + struct.pack(">I", 0), "type 0x3F")


async def bad_version(ctx: Context) -> Verdict:
    return await _refuses(ctx, b"RP\x02" + _ping_bytes()[3:], "wire version 2")


async def trailing_bytes(ctx: Context) -> Verdict:
    payload = struct.pack(">Q", 7) + b"\x00"
    return await _refuses(ctx, b"RP\x01\x38" + struct.pack(">I", 9) + payload, "PING + 1 byte")


async def unknown_session(ctx: Context) -> Verdict:
    link = await _ready(ctx)
    await link.send(SessionData(999, Frame(0x20, bytes(16))))
    if not await link.ping(ctx.settings.timeout):
        return failed("the PED closed the connection")
    others = [m for m in link.queued()
              if not (isinstance(m, SessionClose) and m.session == 999)]
    if others:
        return failed(f"answered: {', '.join(_name(m) for m in others)}")
    return passed("dropped (or closed as unknown); PING still answered")


async def hello_resets(ctx: Context) -> Verdict:
    link = await _ready(ctx)
    await link.open_session(1, ctx.settings.timeout)
    info = await link.hello(ctx.settings.timeout)
    if not isinstance(info, Info):
        return failed("no INFO to a second HELLO")
    try:
        await link.open_session(1, ctx.settings.timeout)
    except NoAnswer as exc:
        return failed(f"after the second HELLO, session 1 could not be opened again: {exc}")
    return passed("INFO again; session 1 was dropped and opened anew")


CASES = (
    Case("1.1", "HELLO is answered by INFO", _SEC, "INFO: version 1, mode remote or local, "
         "max_sessions >= 1", hello_info),
    Case("1.2", "a version range the PED does not speak", _SEC,
         "HELLO(2..5): DEVICE_ERROR UNSUPPORTED_VERSION", unsupported_version),
    Case("1.3", "PING", _SEC, "PONG with the same nonce", ping_pong),
    Case("1.4", "session limit", _SEC, "max_sessions sessions open; one more: SESSION_CLOSE "
         "TOO_MANY_SESSIONS", session_limit),
    Case("1.5", "a frame with a bad magic", "device.md 5, PROTOCOL.md 1",
         "DEVICE_ERROR PROTOCOL_ERROR and/or the end of the connection; nothing answered",
         bad_magic),
    Case("1.6", "a frame over the maximum length", "device.md 5, PROTOCOL.md 1",
         "the PED stops (PROTOCOL_ERROR, end) before reading the payload", bad_length),
    Case("1.7", "a frame of a type the PED does not take", "device.md 5, PROTOCOL.md 1",
         "the PED stops (PROTOCOL_ERROR, end)", bad_type),
    Case("1.8", "a frame of another wire version", "device.md 5, PROTOCOL.md 1",
         "the PED stops (PROTOCOL_ERROR, end)", bad_version),
    Case("1.9", "a payload with trailing bytes", "device.md 2", "the PED stops "
         "(PROTOCOL_ERROR, end)", trailing_bytes),
    Case("1.10", "SESSION_DATA for a session never opened", _SEC,
         "dropped or SESSION_CLOSE UNKNOWN_SESSION; the connection goes on", unknown_session),
    Case("1.11", "a second HELLO resets the device", _SEC,
         "INFO again; earlier sessions dropped", hello_resets),
)
