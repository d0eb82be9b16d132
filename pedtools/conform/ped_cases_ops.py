"""Cases 3.x of ``pedconform ped``: the operations of PROTOCOL.md section 4.

The suite is the HSM here through the project's own API (``ped.hsm_api.PedSession`` on
the ``ped.device`` driver), as an integrator's HSM would be.  It imprints its own test
keysets (fresh random secrets, test PINs: never an operator's real ones), reads them
back, and provokes every refusal: wrong colour, keyset mismatch, cancel from either
side, key timeout.  The secrets it makes are compared and wiped, never printed.
"""

from __future__ import annotations

import contextlib
import secrets
import time

import trio

from keys.colors import Color
from ped.hsm_api import (
    ImprintResult,
    KeysetMismatch,
    KeyTimeout,
    NoticeKind,
    OperationCancelled,
    ReadResult,
    WrongColor,
)
from pedtools.conform.ped_context import Case, Context, Verdict, failed, passed
from pedtools.conform.ped_operator import instruction

#: The test PIN of the M of N keyset (a test value: the suite's own keyset).
TEST_PIN = "246802"
_S4 = "PROTOCOL.md 4"


def _imprint_steps(m: int, n: int, pin: str = "", copies: int = 0,
                   reuse: bool | None = None) -> list[dict[str, object]]:
    steps: list[dict[str, object]] = []
    if reuse is not None:
        steps.append(instruction("answer", question="reuse", value="yes" if reuse else "no"))
    steps += [instruction("answer", question="m", value=m),
              instruction("answer", question="n", value=n),
              instruction("pin", digits=pin)]
    if pin:
        steps.append(instruction("pin", digits=pin))  # the PED asks it twice
    steps.append(instruction("answer", question="duplicate", value="yes" if copies else "no"))
    if copies:
        steps.append(instruction("answer", question="copies", value=copies))
    steps += [instruction("blank") for _ in range(n * (1 + copies))]
    return steps


def _present(color: Color, keyset: bytes, share: int) -> dict[str, object]:
    return instruction("present", colour=color.label, keyset=keyset.hex(), share=share)


async def _imprint(ctx: Context, color: Color, secret: bytes, steps: list[dict[str, object]],
                   *, allow_reuse: bool = False) -> ImprintResult:
    session = await ctx.session()
    return await ctx.with_operator(steps, lambda: session.imprint(
        color, new_secret=secret, allow_reuse=allow_reuse, label=f"conform {color.label}"))


async def _read(ctx: Context, color: Color, keyset: bytes | None,
                steps: list[dict[str, object]], *, key_timeout: float | None = None
                ) -> ReadResult:
    session = await ctx.session()
    return await ctx.with_operator(steps, lambda: session.read_secret(
        color, keyset, label=f"conform {color.label}", key_timeout=key_timeout))


def _check_imprint(result: ImprintResult, color: Color, m: int, n: int, copies: int,
                   pin: bool) -> list[str]:
    problems = []
    if result.color != color:
        problems.append(f"colour {Color(result.color).label}")
    if (result.m, result.n) != (m, n):
        problems.append(f"{result.m} of {result.n}, not {m} of {n}")
    if result.copies != copies:
        problems.append(f"copies {result.copies}, not {copies}")
    if result.pin != pin:
        problems.append(f"pin flag {result.pin}")
    if result.reused:
        problems.append("reused flag set")
    if pin and result.secret is None:
        problems.append("no login secret although a PED PIN was set")
    return problems


async def _imprint_and_read(ctx: Context, color: Color, m: int, n: int, *, pin: str = "",
                            copies: int = 0) -> Verdict:
    secret = secrets.token_bytes(32)
    with await _imprint(ctx, color, secret, _imprint_steps(m, n, pin, copies)) as result:
        problems = _check_imprint(result, color, m, n, n * (1 + copies), bool(pin))
        if problems:
            return failed(f"IMPRINT_RESULT: {'; '.join(problems)}")
        login = bytes(result.secret) if result.secret is not None else secret
        keyset = bytes(result.keyset_id)
    if pin and login == secret:
        return failed("with a PED PIN the login secret is the bare new secret")
    ctx.made[color.label] = (keyset, login)
    steps = [instruction("read", colour=color.label, keyset=keyset.hex(),
                         shares=list(range(1, m + 1)), pin=pin or None)]
    ctx.notices.clear()
    with await _read(ctx, color, keyset, steps) as read:
        got = (bytes(read.keyset_id), read.m, read.n, bytes(read.secret) == login)
    ctx.made[f"notices-{color.label}"] = list(ctx.notices)
    if got != (keyset, m, n, True):
        what = "another secret" if not got[3] else f"keyset/M/N {got[0].hex()} {got[1]}/{got[2]}"
        return failed(f"imprinted {m} of {n}; READ_RESULT: {what}")
    extra = (", PED PIN" if pin else "") + (f", {n * (1 + copies)} keys" if copies else "")
    return passed(f"{color.label} {m} of {n}{extra}: IMPRINT_RESULT right; READ_RESULT "
                  "gives the login secret")


async def show(ctx: Context) -> Verdict:
    session = await ctx.session()
    await session.show_message("pedconform: SHOW_MESSAGE")
    return passed("SHOW_DONE")


async def imprint_blue(ctx: Context) -> Verdict:
    return await _imprint_and_read(ctx, Color.BLUE, 1, 1)


async def imprint_colours(ctx: Context) -> Verdict:
    done: list[str] = []
    for color in (Color.RED, Color.BLACK, Color.WHITE, Color.PURPLE, Color.ORANGE):
        verdict = await _imprint_and_read(ctx, color, 1, 1)
        if not verdict.passed:
            return failed(f"{', '.join(done)} fine; {verdict.seen}")
        done.append(color.label)
    return passed(f"blue (3.2), {', '.join(done)}: each imprinted and read back")


async def m_of_n_pin(ctx: Context) -> Verdict:
    return await _imprint_and_read(ctx, Color.GRAY, 2, 3, pin=TEST_PIN)


async def duplicates(ctx: Context) -> Verdict:
    verdict = await _imprint_and_read(ctx, Color.WHITE, 1, 2, copies=1)
    return verdict


async def reuse(ctx: Context) -> Verdict:
    keyset, login = ctx.made["blue"]
    steps = [instruction("answer", question="reuse", value="yes"),
             _present(Color.BLUE, keyset, 1),
             instruction("answer", question="duplicate", value="no")]
    with await _imprint(ctx, Color.BLUE, secrets.token_bytes(32), steps,
                        allow_reuse=True) as result:
        got = (result.reused, bytes(result.keyset_id), result.copies,
               result.secret is not None and bytes(result.secret) == login)
    if got != (True, keyset, 0, True):
        return failed(f"reused={got[0]}, same keyset={got[1] == keyset}, copies={got[2]}, "
                      f"login secret of that keyset={got[3]}")
    return passed("reused flag, the keyset's id and login secret, 0 keys written")


async def wrong_colour(ctx: Context) -> Verdict:
    keyset, _ = ctx.made["blue"]
    steps = [_present(Color.BLUE, keyset, 1), instruction("cancel")]
    try:
        with await _read(ctx, Color.RED, None, steps):
            return failed("READ_RESULT: the PED gave a secret for a key of the wrong colour")
    except WrongColor:
        return passed("OP_ERROR WRONG_COLOR")
    except OperationCancelled:
        return passed("refused and asked again (the operator then cancelled)")


async def keyset_mismatch(ctx: Context) -> Verdict:
    keyset, _ = ctx.made["blue"]
    steps = [_present(Color.BLUE, keyset, 1), instruction("cancel")]
    try:
        with await _read(ctx, Color.BLUE, secrets.token_bytes(16), steps):
            return failed("READ_RESULT: the PED gave the secret of another keyset")
    except KeysetMismatch:
        return passed("OP_ERROR KEYSET_MISMATCH")


async def hsm_cancel(ctx: Context) -> Verdict:
    session = await ctx.session()
    ctx.notices.clear()

    async def read_then_cancel() -> Verdict:
        async with trio.open_nursery() as nursery:
            async def cancel_soon() -> None:
                with trio.move_on_after(1.0):  # after the PED's first notice, if any
                    while not ctx.notices:
                        await trio.sleep(0.02)
                await session.cancel()
            nursery.start_soon(cancel_soon)
            try:
                with await session.read_secret(Color.BLUE, label="conform cancel"):
                    return failed("READ_RESULT although the HSM cancelled")
            except OperationCancelled:
                return passed("OP_ERROR CANCELLED")

    return await ctx.with_operator([instruction("wait-timeout")], read_then_cancel)


async def operator_cancel(ctx: Context) -> Verdict:
    try:
        with await _read(ctx, Color.BLUE, None, [instruction("cancel")]):
            return failed("READ_RESULT although the operator cancelled")
    except OperationCancelled:
        return passed("OP_ERROR CANCELLED")


async def key_timeout(ctx: Context) -> Verdict:
    wait = ctx.settings.key_timeout
    start = time.monotonic()
    try:
        with trio.fail_after(wait + 10):
            with await _read(ctx, Color.BLUE, None, [instruction("wait-timeout")],
                             key_timeout=wait):
                return failed("READ_RESULT although nobody presented a key")
    except KeyTimeout:
        took = time.monotonic() - start
        if took < wait * 0.8:
            return failed(f"OP_ERROR KEY_TIMEOUT after {took:.1f} s, before the {wait:g} s asked")
        return passed(f"OP_ERROR KEY_TIMEOUT after {took:.1f} s ({wait:g} s asked)")
    except trio.TooSlowError:
        return failed(f"no answer in {wait + 10:g} s (key timeout {wait:g} s)")


async def notices(ctx: Context) -> Verdict:
    seen = ctx.made.get(f"notices-{Color.GRAY.label}", [])
    if not seen:
        return passed("no NOTICE during a 2 of 3 read with PIN (NOTICE is optional)")
    words = [f"{NoticeKind(n.kind).name.lower()} {n.step}/{n.total}" for n in seen]
    wrong = [w for w, n in zip(words, seen, strict=True) if n.total and n.step > n.total]
    if wrong:
        return failed(f"step over total: {', '.join(wrong)}")
    return passed(", ".join(words))


async def two_sessions(ctx: Context) -> Verdict:
    async with contextlib.AsyncExitStack() as stack_a, contextlib.AsyncExitStack() as stack_b:
        await ctx.driver()
        await ctx.drop_session()
        a = await ctx.new_session(stack_a)
        b = await ctx.new_session(stack_b)
        await a.show_message("pedconform: session A")
        await b.show_message("pedconform: session B")
        await stack_a.aclose()
        await b.show_message("pedconform: session B again")
    return passed("two handshakes; both answered in turn; B goes on after A closed")


_NEEDS = ("2.1",)
CASES = (
    Case("3.1", "SHOW_MESSAGE", _S4, "SHOW_DONE", show, needs=_NEEDS),
    Case("3.2", "IMPRINT and READ_SECRET, blue 1 of 1", _S4 + ", 4.1",
         "IMPRINT_RESULT 1 of 1, 1 key; READ_RESULT = the new secret", imprint_blue,
         needs=_NEEDS, weight=2),
    Case("3.3", "every other colour", _S4, "red, black, white, purple, orange imprinted "
         "and read back", imprint_colours, needs=_NEEDS, weight=10),
    Case("3.4", "M of N with a PED PIN", _S4 + ", 4.1", "gray 2 of 3 with PIN: pin flag, "
         "login secret; READ_RESULT (2 keys, PIN) = login secret", m_of_n_pin, needs=_NEEDS,
         weight=2),
    Case("3.5", "duplicates", _S4, "1 of 2, one copy each: copies = 4; read back",
         duplicates, needs=_NEEDS, weight=2),
    Case("3.6", "reuse an existing keyset", _S4, "reused flag, the blue keyset's id and "
         "login secret, 0 keys written", reuse, needs=("3.2",)),
    Case("3.7", "a key of the wrong colour", _S4, "WRONG_COLOR (or asked again), never a "
         "secret", wrong_colour, needs=("3.2",)),
    Case("3.8", "a key of another keyset", _S4, "KEYSET_MISMATCH, never a secret",
         keyset_mismatch, needs=("3.2",)),
    Case("3.9", "CANCEL from the HSM", _S4, "OP_ERROR CANCELLED", hsm_cancel, needs=_NEEDS),
    Case("3.10", "cancel on the PED", _S4, "OP_ERROR CANCELLED", operator_cancel,
         needs=_NEEDS),
    Case("3.11", "key timeout", _S4 + ", 6", "KEY_TIMEOUT after the key_timeout_ms asked",
         key_timeout, needs=_NEEDS),
    Case("3.12", "NOTICE progress", _S4, "well-formed NOTICEs (optional): step of total",
         notices, needs=("3.4",), required=False),
    Case("3.13", "two HSM sessions at once", "device.md 3, PROTOCOL.md 6",
         "both sessions served; one closing leaves the other", two_sessions, needs=_NEEDS,
         weight=3),
)
