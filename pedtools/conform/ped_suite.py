"""``pedconform ped``: run the numbered cases against a PED and report them.

    pedconform ped --device URI (--rpv-file F | --rpv-hex HEX) [--operator CMD]
                   [--report FILE] [--cases 1.*,3.2] [--timeout S] [--key-timeout S] | --list

The cases live in ``ped_cases_device`` (1.x, device transport), ``ped_cases_channel``
(2.x, end-to-end channel) and ``ped_cases_ops`` (3.x, operations); this module selects
them, runs each within its time bound (a PED that never answers fails the case, the run
goes on), skips a case whose prerequisite did not pass (naming it), and prints the
table (``report.render_table``) and writes the JSON report.  Exit status: 0 when every
required case passed, 1 otherwise, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from ped.errors import PedError
from pedtools.conform import ped_cases_channel, ped_cases_device, ped_cases_ops
from pedtools.conform.ped_context import Case, Context, Settings
from pedtools.conform.ped_operator import (
    Operator,
    OperatorFailed,
    PersonOperator,
    ProcessOperator,
    instruction,
)
from pedtools.conform.ped_wire import NoAnswer
from pedtools.conform.report import (
    CaseOutcome,
    CaseResult,
    RunReport,
    render_table,
    summary_line,
    write_json,
)

ALL_CASES: tuple[Case, ...] = (
    ped_cases_device.CASES + ped_cases_channel.CASES + ped_cases_ops.CASES
)


class SuiteUsageError(PedError):
    """A command line the suite cannot run (exit status 2)."""

    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", metavar="URI",
                        help="the PED under test: socket:PATH, usb[:VID:PID[:SERIAL]] or "
                             "emulated:DIR[?options]")
    rpv = parser.add_mutually_exclusive_group()
    rpv.add_argument("--rpv-file", metavar="F",
                     help="the RPV of the PED's orange key: 32 bytes, or 64 hex digits")
    rpv.add_argument("--rpv-hex", metavar="HEX", help="the RPV as 64 hex digits")
    parser.add_argument("--operator", metavar="CMD",
                        help="operator adapter: a program taking one JSON instruction a "
                             "line on stdin (docs/protocol/conformance.md); without it the "
                             "instructions are printed for a person, who presses Enter")
    parser.add_argument("--report", metavar="FILE", help="write the JSON report here")
    parser.add_argument("--cases", metavar="LIST",
                        help="the cases to run, e.g. '1.*,3.2' (default: all); the cases "
                             "they need run too")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="seconds one operation of a case may take (default 60)")
    parser.add_argument("--key-timeout", type=float, default=3.0, metavar="S",
                        help="the PED-key timeout the key-timeout case asks for (default 3)")
    parser.add_argument("--quiet", type=float, default=1.0, metavar="S",
                        help="seconds of silence that show the PED said nothing after a "
                             "forged frame (default 1)")


def select(patterns: str | None) -> list[Case]:
    if not patterns:
        return list(ALL_CASES)
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    numbers = {c.number for c in ALL_CASES if any(fnmatch.fnmatchcase(c.number, p) for p in wanted)}
    if not numbers:
        raise SuiteUsageError(f"no case matches {patterns!r} (see --list)")
    # A case's prerequisites run with it (the handshake before the operations...).
    needs = {c.number: c.needs for c in ALL_CASES}
    todo = list(numbers)
    while todo:
        for need in needs[todo.pop()]:
            if need not in numbers:
                numbers.add(need)
                todo.append(need)
    return [c for c in ALL_CASES if c.number in numbers]


def read_rpv(args: argparse.Namespace) -> bytes:
    if args.rpv_hex:
        text = args.rpv_hex
    elif args.rpv_file:
        try:
            data = Path(args.rpv_file).read_bytes()
        except OSError as exc:
            raise SuiteUsageError(
                f"cannot read the RPV file {args.rpv_file}: {exc.strerror}"
            ) from None
        if len(data) == 32:
            return data
        text = data.decode("ascii", "replace").strip()
    else:
        raise SuiteUsageError("give the PED's RPV with --rpv-file F or --rpv-hex HEX")
    try:
        rpv = bytes.fromhex(text)
    except ValueError:
        rpv = b""
    if len(rpv) != 32:
        raise SuiteUsageError("an RPV is 32 bytes: 64 hex digits (or a 32-byte file)")
    return rpv


def run(args: argparse.Namespace) -> int:
    try:
        cases = select(args.cases)
        if args.list:
            for case in cases:
                flag = "" if case.required else " (optional)"
                print(f"{case.number:5} {case.section:28} {case.title}{flag}")
            return 0
        if not args.device:
            raise SuiteUsageError("name the PED under test with --device URI")
        for name in ("timeout", "key_timeout", "quiet"):
            if not getattr(args, name) > 0:
                raise SuiteUsageError(f"--{name.replace('_', '-')} must be positive")
        settings = Settings(args.device, read_rpv(args), timeout=args.timeout,
                            key_timeout=args.key_timeout, quiet=args.quiet)
    except SuiteUsageError as exc:
        print(f"pedconform ped: {exc}", file=sys.stderr)
        return 2
    operator: Operator = (ProcessOperator(args.operator) if args.operator
                          else PersonOperator())
    try:
        report = trio.run(run_suite, settings, operator, cases)
    except OperatorFailed as exc:  # the adapter could not even start
        print(f"pedconform ped: {exc}", file=sys.stderr)
        return 2
    print(render_table(report.cases))
    print(summary_line(report))
    if args.report:
        write_json(report, Path(args.report))
    return report.exit_code()


async def run_suite(settings: Settings, operator: Operator, cases: Sequence[Case],
                    *, progress: bool = True) -> RunReport:
    """Run *cases* in order against the PED of *settings*; the report."""
    if isinstance(operator, ProcessOperator):
        await operator.start()
    ctx = Context(settings, operator)
    selected = {case.number for case in cases}
    try:
        with trio.move_on_after(settings.timeout):
            await operator.do(instruction("hello", suite="ped", version=1))
        for case in cases:
            result = await _run_one(ctx, case, selected)
            ctx.results[case.number] = result
            if progress:
                print(f"pedconform: case {case.number} {result.outcome.value}: {result.seen}",
                      file=sys.stderr)
    finally:
        await ctx.close_all()
        with trio.move_on_after(10):
            try:
                await operator.do(instruction("bye"))
            except OperatorFailed:
                pass
        await operator.aclose()
    return RunReport("ped", settings.uri, tuple(ctx.results[c.number] for c in cases))


async def _run_one(ctx: Context, case: Case, selected: set[str]) -> CaseResult:
    def result(outcome: CaseOutcome, seen: str) -> CaseResult:
        return CaseResult(case.number, case.title, case.section, case.expected, seen, outcome,
                          case.required)

    for need in case.needs:
        if need not in selected:
            return result(CaseOutcome.SKIP, f"not run: needs case {need}, which was not selected")
        if ctx.results[need].outcome not in (CaseOutcome.PASS, CaseOutcome.INFO):
            return result(CaseOutcome.SKIP, f"not run: needs case {need}, which did not pass")
    bound = ctx.settings.timeout * case.weight
    seen = f"no answer in {bound:g} s"
    verdict = None
    with trio.move_on_after(bound):
        try:
            verdict = await case.run(ctx)
        except OperatorFailed as exc:
            seen = str(exc)
        except NoAnswer as exc:
            seen = str(exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            seen = f"the connection to the PED broke: {exc}"
        except (PedError, OSError) as exc:
            seen = f"{type(exc).__name__}: {exc}"
    if verdict is None:
        await ctx.drop_session()  # whatever it was doing, start the next case afresh
        await ctx.reset_operator()
        return result(CaseOutcome.FAIL, seen)
    if not case.required:
        return result(CaseOutcome.INFO if verdict.passed else CaseOutcome.FAIL, verdict.seen)
    return result(CaseOutcome.PASS if verdict.passed else CaseOutcome.FAIL, verdict.seen)
