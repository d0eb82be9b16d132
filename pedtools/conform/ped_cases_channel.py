"""Cases 2.x of ``pedconform ped``: the end-to-end channel (PROTOCOL.md section 3).

The suite plays the HSM with the sans-IO `ped.ops.HsmSideSession` over a raw device
connection, so that it can send what a correct HSM never does: a wrong RPV, a
bit-flipped or replayed HANDSHAKE_INIT or SEALED frame, an unknown suite.  After a
forged frame the PED must say nothing on that session (3.6: it wiped its keys and does
not answer in the clear); "nothing" is checked with a PING barrier and `Settings.quiet`
seconds of silence.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import trio

from ped.channel import LOCAL_RPV
from ped.channel.handshake import HandshakeRefusal
from ped.device.messages import SessionClose, SessionData
from ped.ops import events as ev
from ped.ops.hsm_side import HsmSideSession
from ped.wire.framing import Frame
from ped.wire.types import E2EType
from pedtools.conform.ped_context import HSM_SERIAL, Case, Context, Verdict, failed, passed
from pedtools.conform.ped_operator import instruction
from pedtools.conform.ped_wire import Closed, RawLink

SESSION = 1
_SHOW_TEXT = "pedconform: channel check"


def _flip(frame: Frame, index: int = -1) -> Frame:
    payload = bytearray(frame.payload)
    payload[index] ^= 0x01
    return Frame(frame.type, bytes(payload))


def _refusal(frame: Frame) -> str:
    try:
        refusal = HandshakeRefusal.from_frame(frame)
    except Exception as exc:
        return f"a malformed HANDSHAKE_REFUSED ({exc})"
    return f"HANDSHAKE_REFUSED {refusal.reason.name}"


async def _handshake(
    ctx: Context,
    rpv: bytes,
    *,
    steps: list[dict[str, object]] | None = None,
    suite: int = 2,
    mutate: Callable[[Frame], Frame] | None = None,
    init: Frame | None = None,
) -> tuple[RawLink, HsmSideSession, Frame, Frame | Closed]:
    """A raw session 1 and a handshake on it: (link, hsm, INIT sent, the PED's answer)."""
    link = await ctx.raw()
    await link.hello(ctx.settings.timeout)
    await link.open_session(SESSION, ctx.settings.timeout)
    hsm = HsmSideSession(rpv=rpv, hsm_serial=HSM_SERIAL,
                         key_timeout_ms=int(ctx.settings.timeout * 1000), suite=suite)
    sent = init or hsm.start_handshake()
    if init is None and mutate is not None:
        sent = mutate(sent)

    async def exchange() -> Frame | Closed:
        await link.send(SessionData(SESSION, sent))
        return await link.session_frame(SESSION, ctx.settings.timeout)

    answer = await ctx.with_operator(steps if steps is not None else [instruction("rpv")],
                                     exchange)
    return link, hsm, sent, answer


def _open(hsm: HsmSideSession, answer: Frame | Closed) -> str | None:
    """None if *answer* completes the handshake, else what it was."""
    if isinstance(answer, Closed):
        return answer.why
    if answer.type == E2EType.HANDSHAKE_REFUSED:
        return _refusal(answer)
    try:
        hsm.receive_frame(answer)
    except Exception as exc:
        return f"a HANDSHAKE_RESPONSE that does not authenticate ({type(exc).__name__})"
    return None


async def _silent(ctx: Context, link: RawLink) -> str | None:
    """None if the PED sends nothing on the session (a close is fine), else what it sent."""
    with trio.move_on_after(ctx.settings.quiet):
        while True:
            message = await link.next_message(ctx.settings.quiet + 1)
            if isinstance(message, Closed):
                return None
            if isinstance(message, SessionData) and message.session == SESSION:
                return f"an end-to-end frame of type 0x{message.frame.type:02x}"
            if isinstance(message, SessionClose):
                continue
    return None


async def right_rpv(ctx: Context) -> Verdict:
    link, hsm, init, answer = await _handshake(ctx, ctx.settings.rpv)
    problem = _open(hsm, answer)
    if problem is not None:
        return failed(problem)
    show = hsm.show_message(_SHOW_TEXT)
    await link.send(SessionData(SESSION, show))
    reply = await link.session_frame(SESSION, ctx.settings.timeout)
    if isinstance(reply, Closed):
        return failed(f"handshake done; SHOW_MESSAGE: {reply.why}")
    events = hsm.receive_frame(reply)
    while events and isinstance(events[0], ev.ProgressNotice):
        reply = await link.session_frame(SESSION, ctx.settings.timeout)
        if isinstance(reply, Closed):
            return failed(f"handshake done; SHOW_MESSAGE: {reply.why}")
        events = hsm.receive_frame(reply)
    if not events or not isinstance(events[0], ev.OperationSucceeded):
        return failed(f"handshake done; SHOW_MESSAGE answered {events!r}")
    ctx.made["recorded"] = (init, show)
    info = hsm.ped_info
    goodbye = hsm.close()
    if goodbye is not None:
        await link.send(SessionData(SESSION, goodbye))
    return passed(f"HANDSHAKE_RESPONSE ({info.model if info else '?'} "
                  f"{info.serial if info else '?'}); a sealed SHOW_MESSAGE answered")


async def wrong_rpv(ctx: Context) -> Verdict:
    _, hsm, _, answer = await _handshake(ctx, secrets.token_bytes(32))
    problem = _open(hsm, answer)
    if problem is None:
        return failed("the PED completed a handshake keyed with a wrong RPV")
    if problem == "HANDSHAKE_REFUSED RPV_MISMATCH":
        return passed(problem)
    return failed(problem)


async def local_rpv(ctx: Context) -> Verdict:
    mode = ctx.info.mode if ctx.info is not None else "remote"
    if mode == "local":
        steps = [instruction("answer", question="local", value="yes")]
        _, hsm, _, answer = await _handshake(ctx, LOCAL_RPV, steps=steps)
        problem = _open(hsm, answer)
        if problem is None:
            return passed("local mode: accepted after the operator's YES")
        return failed(f"local mode, operator said YES: {problem}")
    _, hsm, _, answer = await _handshake(ctx, LOCAL_RPV)
    problem = _open(hsm, answer)
    if problem is None:
        return failed("remote mode: the PED accepted LOCAL_RPV")
    if problem == "HANDSHAKE_REFUSED RPV_MISMATCH":
        return passed(f"remote mode: {problem}")
    return failed(f"remote mode: {problem}")


async def flipped_init(ctx: Context) -> Verdict:
    _, hsm, _, answer = await _handshake(ctx, ctx.settings.rpv, mutate=_flip)
    problem = _open(hsm, answer)
    if problem is None:
        return failed("the PED completed a handshake whose message 1 was altered")
    if problem.startswith("HANDSHAKE_REFUSED"):
        return passed(problem)
    return failed(problem)


async def replayed_init(ctx: Context) -> Verdict:
    init, show = ctx.made["recorded"]
    link, _, _, answer = await _handshake(ctx, secrets.token_bytes(32), init=init)
    first = "the PED refused" if not isinstance(answer, Closed) and (
        answer.type == E2EType.HANDSHAKE_REFUSED) else "the PED answered"
    await link.send(SessionData(SESSION, show))
    said = await _silent(ctx, link)
    if said is not None:
        return failed(f"replayed INIT: {first}; replayed SHOW_MESSAGE: {said}")
    if not await link.ping(ctx.settings.timeout):
        pass  # a PED may close the whole connection: nothing revealed either way
    return passed(f"replayed INIT: {first}; the replayed SEALED frame: nothing")


async def _established(ctx: Context) -> tuple[RawLink, HsmSideSession] | Verdict:
    link, hsm, _, answer = await _handshake(ctx, ctx.settings.rpv)
    problem = _open(hsm, answer)
    if problem is not None:
        return failed(f"handshake with the right RPV: {problem}")
    return link, hsm


async def flipped_sealed(ctx: Context) -> Verdict:
    got = await _established(ctx)
    if isinstance(got, Verdict):
        return got
    link, hsm = got
    show = hsm.show_message(_SHOW_TEXT)
    await link.send(SessionData(SESSION, _flip(show, 3)))
    said = await _silent(ctx, link)
    if said is not None:
        return failed(f"bit-flipped SEALED: {said}")
    await link.send(SessionData(SESSION, show))  # the genuine frame: the channel is dead
    said = await _silent(ctx, link)
    if said is not None:
        return failed(f"bit-flipped SEALED: nothing; then the genuine frame: {said} "
                      "(the PED kept the channel)")
    return passed("nothing on the session, also for the genuine frame after it")


async def replayed_sealed(ctx: Context) -> Verdict:
    got = await _established(ctx)
    if isinstance(got, Verdict):
        return got
    link, hsm = got
    show = hsm.show_message(_SHOW_TEXT)
    await link.send(SessionData(SESSION, show))
    while True:
        reply = await link.session_frame(SESSION, ctx.settings.timeout)
        if isinstance(reply, Closed):
            return failed(f"SHOW_MESSAGE: {reply.why}")
        events = hsm.receive_frame(reply)
        if events and not isinstance(events[0], ev.ProgressNotice):
            break
    await link.send(SessionData(SESSION, show))
    said = await _silent(ctx, link)
    if said is not None:
        return failed(f"replayed SEALED: {said}")
    return passed("SHOW_DONE once; the replay: nothing")


async def unknown_suite(ctx: Context) -> Verdict:
    _, _, _, answer = await _handshake(ctx, ctx.settings.rpv, steps=[],
                                       mutate=lambda f: Frame(f.type, b"\x03" + f.payload[1:]))
    if isinstance(answer, Closed):
        return failed(answer.why)
    if answer.type != E2EType.HANDSHAKE_REFUSED:
        return failed(f"an end-to-end frame of type 0x{answer.type:02x}")
    seen = _refusal(answer)
    if seen == "HANDSHAKE_REFUSED UNSUPPORTED":
        return passed(f"{seen} (no orange key asked)")
    return failed(seen)


async def suite_one(ctx: Context) -> Verdict:
    _, hsm, _, answer = await _handshake(ctx, ctx.settings.rpv, suite=1)
    problem = _open(hsm, answer)
    if problem is not None:
        return failed(f"suite 1: {problem}")
    return passed("suite 1: HANDSHAKE_RESPONSE")


_S3 = "PROTOCOL.md 3"
CASES = (
    Case("2.1", "handshake with the right RPV", "PROTOCOL.md 3.2-3.4, 3.6",
         "HANDSHAKE_RESPONSE that authenticates; a sealed SHOW_MESSAGE is answered",
         right_rpv, needs=("1.1",)),
    Case("2.2", "handshake with a wrong RPV", "PROTOCOL.md 3.5",
         "HANDSHAKE_REFUSED RPV_MISMATCH, nothing else", wrong_rpv, needs=("2.1",)),
    Case("2.3", "LOCAL_RPV", "PROTOCOL.md 3.2, 3.7",
         "remote mode: RPV_MISMATCH; local mode: accepted after YES", local_rpv,
         needs=("2.1",)),
    Case("2.4", "a bit-flipped HANDSHAKE_INIT", "PROTOCOL.md 3.3, 3.5, 7",
         "HANDSHAKE_REFUSED (RPV_MISMATCH), no channel", flipped_init, needs=("2.1",)),
    Case("2.5", "a replayed HANDSHAKE_INIT and SEALED frame", "PROTOCOL.md 3.6, 7",
         "the replayed request gets nothing", replayed_init, needs=("2.1",)),
    Case("2.6", "a bit-flipped SEALED frame", "PROTOCOL.md 3.6",
         "nothing on the session (keys wiped), also for the genuine frame after it",
         flipped_sealed, needs=("2.1",)),
    Case("2.7", "a SEALED frame replayed in its session", "PROTOCOL.md 3.6",
         "answered once; the replay gets nothing", replayed_sealed, needs=("2.1",)),
    Case("2.8", "an unknown cipher suite", "PROTOCOL.md 3.3, 3.5",
         "HANDSHAKE_REFUSED UNSUPPORTED without asking for a key", unknown_suite,
         needs=("2.1",)),
    Case("2.9", "an HSM of suite 1", _S3 + ".1", "HANDSHAKE_RESPONSE in suite 1", suite_one,
         needs=("2.1",)),
)
