"""The cases of `pedconform hsm`: the step each asks, the fault the PED plays, the verdict.

Each case sets a `faulty_ped.Fault`, runs one step of the HSM under test (`hsm_steps`),
and judges from what the PED saw on the wire (`faulty_ped.Wire`) and from the step's exit
status; where counting is not visible on the wire it reads the HSM's failed-login counter
through the ``show-counter`` step before and after (no counter: the counting part is
INFO).  The expectations and their sections are in `CASES` and in
docs/protocol/conformance-hsm.md.
"""

from __future__ import annotations

from pedtools.conform.faulty_ped import Fault, Record
from pedtools.conform.hsm_context import CASES, SPECS, CaseFn, CaseSpec, Context, result
from pedtools.conform.report import CaseOutcome, CaseResult

__all__ = ["CASES", "RUNNERS", "SPECS", "Context"]


#: A show-link that says connected when the HSM cannot use its session: the operator
#: retries on a dead link instead of reconnecting.
STILL_CONNECTED = ("show-link still says connected after {why} (an operator would retry "
                   "on a dead session instead of reconnecting)")


def _shown_words(shown: bool | None) -> str:
    if shown is None:
        return ""  # the HSM has no show-link step
    return "; show-link: connected" if shown else "; show-link: not connected"


def _kinds(records: list[Record], kind: str) -> list[Record]:
    return [r for r in records if r.kind == kind]


def _link_errors(records: list[Record]) -> list[str]:
    return [r.detail for r in records if r.kind in ("link-error", "hsm-garbage")]


def _counting(before: int | None, after: int | None, counted: bool) -> tuple[bool | None, str]:
    """(verdict or None if unknown, words) for the counter around a refused login."""
    if before is None or after is None:
        return None, "counter not observable"
    changed = before != after
    words = f"counter {before} -> {after} ({'counted' if changed else 'not counted'})"
    return changed == counted, words


async def case_right_rpv(ctx: Context, spec: CaseSpec) -> CaseResult:
    await ctx.step("disconnect")
    mark = ctx.wire.mark()
    done = await ctx.step("connect")
    ctx.dirty = not done.ok
    seen = ctx.wire.since(mark)
    inits = _kinds(seen, "handshake-init")
    problems = _link_errors(seen)
    if not done.ok:
        problems.append(done.summary())
    if not inits:
        problems.append("no HANDSHAKE_INIT reached the PED")
    elif any(r.detail != "suite 2" for r in inits):
        problems.append(f"asked for {inits[-1].detail}, not suite 2 (PROTOCOL.md 3.1)")
    if not _kinds(seen, "channel"):
        problems.append("no channel was established")
    shown = await ctx.link_shown() if done.ok else None
    if shown is False:
        problems.append("show-link does not say connected right after a successful connect "
                        "(or --connected-pattern does not match its words)")
    if problems:
        return result(spec, CaseOutcome.FAIL, "; ".join(problems))
    return result(spec, CaseOutcome.PASS,
                  f"{done.summary()}; {inits[-1].detail}{_shown_words(shown)}")


async def case_init(ctx: Context, spec: CaseSpec) -> CaseResult:
    mark = ctx.wire.mark()
    done = await ctx.step("init")
    seen = ctx.wire.since(mark)
    imprints = [r.detail for r in _kinds(seen, "imprint")]
    ctx.initialised = done.ok and any("blue" in d for d in imprints)
    if not ctx.initialised:
        words = ", ".join(imprints) or "no IMPRINT"
        return result(spec, CaseOutcome.FAIL, f"{done.summary()}; {words}")
    return result(spec, CaseOutcome.PASS, f"{done.summary()}; {', '.join(imprints)}")


async def case_login(ctx: Context, spec: CaseSpec) -> CaseResult:
    if not ctx.initialised:
        return result(spec, CaseOutcome.SKIP, "the HSM was not initialised on this PED (1.2)")
    await ctx.connect()
    mark = ctx.wire.mark()
    done = await ctx.step("login")
    seen = ctx.wire.since(mark)
    problems = _link_errors(seen)
    if not done.ok:
        problems.append(done.summary())
    if not _kinds(seen, "read"):
        problems.append("no READ_SECRET reached the PED")
    if _kinds(seen, "unknown-key"):
        problems.append("the HSM asked for a key this PED did not imprint")
    await ctx.step("logout")
    if problems:
        return result(spec, CaseOutcome.FAIL, "; ".join(problems))
    counter = await ctx.counter()
    tail = f"; counter {counter}" if counter is not None else ""
    return result(spec, CaseOutcome.PASS, f"{done.summary()}{tail}")


def handshake_case(fault: Fault) -> CaseFn:
    async def run(ctx: Context, spec: CaseSpec) -> CaseResult:
        before = await ctx.counter()
        await ctx.step("disconnect")
        mark = ctx.wire.mark()
        done = await ctx.step("connect", fault)
        seen = ctx.wire.since(mark)
        after = await ctx.counter()
        restored = await ctx.step("connect")
        ctx.dirty = not restored.ok
        problems = _link_errors(seen)
        if not _kinds(seen, "handshake-init"):
            problems.append("no HANDSHAKE_INIT reached the PED")
        if done.ok:
            problems.append(f"connect succeeded ({done.summary()})")
        sealed = _kinds(seen, "after-failure")
        if sealed or _kinds(seen, "read") or _kinds(seen, "imprint"):
            problems.append("the HSM sent sealed frames after the failed handshake")
        verdict, words = _counting(before, after, counted=False)
        if verdict is False:
            problems.append(words)
        if not restored.ok:
            problems.append(f"then the right RPV failed: {restored.summary()}")
        if problems:
            return result(spec, CaseOutcome.FAIL, "; ".join(problems))
        seen_words = f"{done.summary()}; {words}"
        if verdict is None:
            return result(spec, CaseOutcome.INFO, seen_words, required=False)
        return result(spec, CaseOutcome.PASS, seen_words)

    return run


def refused_read_case(fault: Fault, *, counted: bool) -> CaseFn:
    async def run(ctx: Context, spec: CaseSpec) -> CaseResult:
        if not ctx.initialised:
            return result(spec, CaseOutcome.SKIP, "the HSM was not initialised on this PED (1.2)")
        await ctx.connect()
        before = await ctx.counter()
        mark = ctx.wire.mark()
        done = await ctx.step("login", fault)
        seen = ctx.wire.since(mark)
        broken = fault in (Fault.GARBAGE, Fault.TAMPERED)
        shown = await ctx.link_shown() if broken else None
        after = await ctx.counter()
        if done.ok:
            await ctx.step("logout")
        ctx.dirty = ctx.dirty or broken
        problems = _link_errors(seen)
        if not _kinds(seen, "read"):
            problems.append("no READ_SECRET reached the PED")
        if done.ok:
            problems.append(f"login succeeded ({done.summary()})")
        if fault in (Fault.GARBAGE, Fault.TAMPERED) and _kinds(seen, "after-failure"):
            problems.append(
                "the HSM sent a SEALED frame on the session after it failed "
                "(its keys must be wiped: PROTOCOL.md 3.6)"
            )
        if shown:
            problems.append(STILL_CONNECTED.format(why="its session broke"))
        verdict, words = _counting(before, after, counted)
        if verdict is False:
            problems.append(words)
        if counted:  # a good login resets the consecutive failures (a threshold stays far)
            if (await ctx.step("login")).ok:
                await ctx.step("logout")
        if problems:
            return result(spec, CaseOutcome.FAIL, "; ".join(problems))
        seen_words = f"{done.summary()}; {words}{_shown_words(shown)}"
        if verdict is None:
            return result(spec, CaseOutcome.INFO, seen_words, required=False)
        return result(spec, CaseOutcome.PASS, seen_words)

    return run


def _announced_timeout(records: list[Record]) -> int | None:
    for r in reversed(_kinds(records, "op-begin")):
        if r.detail:
            return int(r.detail)
    return None


async def case_slow(ctx: Context, spec: CaseSpec) -> CaseResult:
    if not ctx.initialised:
        return result(spec, CaseOutcome.SKIP, "the HSM was not initialised on this PED (1.2)")
    await ctx.connect()
    timeout = _announced_timeout(ctx.wire.records)
    # just inside: 5 s before the timeout, or a quarter of a short one (at least 1 s)
    margin = min(ctx.slow_margin, max(1.0, timeout / 4)) if timeout is not None else 0.0
    inside = ctx.slow_limit if timeout is None else timeout - margin
    delay = max(0.5, min(inside, ctx.slow_limit))
    ctx.ped.slow_delay = delay
    mark = ctx.wire.mark()
    done = await ctx.step("login", Fault.SLOW, extra=delay)
    seen = ctx.wire.since(mark)
    problems = _link_errors(seen)
    if done.ok:
        await ctx.step("logout")
    else:
        problems.append(done.summary())
    if _kinds(seen, "cancel"):
        problems.append("the HSM cancelled before its timeout")
    where = ("its announced timeout unknown" if timeout is None
             else f"its announced operation timeout {timeout} s")
    seen_words = f"answered after {delay:g} s ({where}); {done.summary()}"
    if problems:
        return result(spec, CaseOutcome.FAIL, f"{seen_words}; " + "; ".join(problems))
    return result(spec, CaseOutcome.PASS, seen_words)


async def case_silent(ctx: Context, spec: CaseSpec) -> CaseResult:
    if not ctx.initialised:
        return result(spec, CaseOutcome.SKIP, "the HSM was not initialised on this PED (1.2)")
    await ctx.connect()
    timeout = _announced_timeout(ctx.wire.records)
    if timeout is None or timeout > ctx.slow_limit:
        why = ("the HSM announces no operation timeout" if timeout is None
               else f"the HSM's operation timeout, {timeout} s, is over --slow-limit "
                    f"{ctx.slow_limit:g} s")
        return result(spec, CaseOutcome.SKIP, f"not run: {why}")
    before = await ctx.counter()
    mark = ctx.wire.mark()
    done = await ctx.step("login", Fault.SILENT, extra=timeout + 15)
    ctx.dirty = True
    seen = ctx.wire.since(mark)
    after = await ctx.counter()
    problems = _link_errors(seen)
    if done.ok:
        problems.append("login succeeded without an answer")
    if not _kinds(seen, "cancel"):
        problems.append("no CANCEL reached the PED")
    verdict, words = _counting(before, after, counted=False)
    if verdict is False:
        problems.append(words)
    if problems:
        return result(spec, CaseOutcome.FAIL, "; ".join(problems))
    return result(spec, CaseOutcome.PASS, f"CANCEL sent; {done.summary()}; {words}")


async def case_link_lost(ctx: Context, spec: CaseSpec) -> CaseResult:
    if not ctx.initialised:
        return result(spec, CaseOutcome.SKIP, "the HSM was not initialised on this PED (1.2)")
    await ctx.connect()
    before = await ctx.counter()
    done = await ctx.step("login", Fault.DROP_LINK)
    shown = await ctx.link_shown()
    after = await ctx.counter()
    links_before = ctx.wire.links
    mark = ctx.wire.mark()
    again = await ctx.step("connect")  # the retry: the documented way back (README)
    ctx.dirty = not again.ok
    retried = await ctx.step("login")
    seen = ctx.wire.since(mark)
    if retried.ok:
        await ctx.step("logout")
    problems = _link_errors(seen)
    if done.ok:
        problems.append(f"login succeeded over a cut link ({done.summary()})")
    if shown:
        problems.append(STILL_CONNECTED.format(why="its link was cut"))
    verdict, words = _counting(before, after, counted=False)
    if verdict is False:
        problems.append(words)
    if not again.ok or ctx.wire.links == links_before:
        problems.append(f"no new link on retry ({again.summary()})")
    if not retried.ok:
        problems.append(f"login after reconnecting failed ({retried.summary()})")
    if problems:
        return result(spec, CaseOutcome.FAIL, "; ".join(problems))
    seen_words = (f"{done.summary()}; {words}{_shown_words(shown)}; "
                  "reconnected and logged in")
    if verdict is None:
        return result(spec, CaseOutcome.INFO, seen_words, required=False)
    return result(spec, CaseOutcome.PASS, seen_words)


RUNNERS: dict[str, CaseFn] = {
    "1.1": case_right_rpv,
    "1.2": case_init,
    "1.3": case_login,
    "2.1": handshake_case(Fault.WRONG_RPV),
    "2.2": handshake_case(Fault.ALTERED_RESPONSE),
    "3.1": refused_read_case(Fault.GARBAGE, counted=False),
    "3.2": refused_read_case(Fault.TAMPERED, counted=False),
    "3.3": refused_read_case(Fault.WRONG_COLOUR, counted=False),
    "3.4": refused_read_case(Fault.KEYSET_MISMATCH, counted=True),
    "3.5": refused_read_case(Fault.CANCELLED, counted=False),
    "3.6": refused_read_case(Fault.KEY_TIMEOUT, counted=False),
    "3.7": case_slow,
    "3.8": case_silent,
    "4.1": case_link_lost,
}
