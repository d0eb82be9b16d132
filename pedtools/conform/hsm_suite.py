"""``pedconform hsm``: offer an HSM under test a PED whose faults are chosen per case, and judge it.

The suite listens as pedserver (``--listen IP:PORT``, for the HSM's own pedclient) and/or
as pedclient's local endpoint (``--pedclient PATH``, for an HSM that connects directly),
with `faulty_ped.FaultyPed` behind (`hsm_link`).  It then runs the cases of `hsm_cases`
in order, each asking the HSM for steps (`hsm_steps`: through ``--hsm-cmd TEMPLATE``, or
by asking the tester), and prints the table and writes the JSON report (`report`).
docs/protocol/conformance-hsm.md is the guide.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import trio

from keys import Color, Keyring
from pedtools.conform.faulty_ped import FaultyPed, Record, Wire
from pedtools.conform.hsm_cases import CASES, RUNNERS, Context
from pedtools.conform.hsm_link import LinkServer
from pedtools.conform.hsm_steps import (
    DEFAULT_CONNECTED_PATTERN,
    DEFAULT_COUNTER_PATTERN,
    DEFAULT_STEP_TIMEOUT,
    PLACEHOLDERS,
    StepError,
    StepRunner,
    parse_step_overrides,
)
from pedtools.conform.report import (
    CaseOutcome,
    CaseResult,
    RunReport,
    render_table,
    summary_line,
    write_json,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("where the HSM finds the suite's PED (one or both)")
    where.add_argument("--listen", metavar="IP:PORT",
                       help="listen as pedserver: the HSM's pedclient dials it "
                            "(default 127.0.0.1:0, a free port, when --pedclient is not given)")
    where.add_argument("--pedclient", metavar="PATH", type=Path,
                       help="listen as pedclient's local endpoint (a Unix socket): the HSM "
                            "connects to it directly")
    parser.add_argument("--keyring", metavar="DIR", type=Path,
                        help="the PED's keys: the orange key holding the HSM's RPV (required "
                             "to run cases)")
    parser.add_argument("--hsm-cmd", metavar="TEMPLATE",
                        help="run each step with this command line, e.g. "
                             "'pedhsm --home H {command}'; placeholders: "
                             + ", ".join(PLACEHOLDERS) + ". Without it the suite asks you")
    parser.add_argument("--step", action="append", default=[], metavar="NAME=WORDS",
                        help="the words of a step for your HSM (default: pedhsm's); an empty "
                             "show-counter= says the HSM shows no counter")
    parser.add_argument("--counter-pattern", default=DEFAULT_COUNTER_PATTERN, metavar="REGEX",
                        help="finds the counter in show-counter's output (first group)")
    parser.add_argument("--connected-pattern", default=DEFAULT_CONNECTED_PATTERN,
                        metavar="REGEX",
                        help="found in show-link's output while the HSM says it is connected "
                             "to the PED (default pedhsm's `Connected: yes`; an empty "
                             "show-link= says the HSM shows no link state)")
    parser.add_argument("--cases", nargs="+", metavar="CASE",
                        help="run only these cases (1.1, 3.4...); 1.1 and 1.2 prepare the others")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--report", metavar="FILE", type=Path, help="write the JSON report here")
    parser.add_argument("--trace", action="store_true",
                        help="print what the PED sees and does as it happens (no secrets)")
    parser.add_argument("--slow-limit", type=float, default=30.0, metavar="S",
                        help="longest the slow and silent PED cases wait (default 30 s)")
    parser.add_argument("--step-timeout", type=float, default=DEFAULT_STEP_TIMEOUT, metavar="S",
                        help=f"longest one step may run (default {DEFAULT_STEP_TIMEOUT:g} s)")


def list_cases() -> str:
    lines = []
    for spec in CASES:
        flag = "" if spec.required else " (optional)"
        lines.append(f"{spec.case:5} {spec.title}{flag} [{spec.section}]\n      {spec.expected}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.list:
        print(list_cases())
        return 0
    problem = _check_arguments(args)
    if problem:
        print(f"pedconform hsm: {problem}", file=sys.stderr)
        return 2
    try:
        report = trio.run(_run, args)
    except (StepError, OSError) as exc:
        print(f"pedconform hsm: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pedconform hsm: interrupted; no report", file=sys.stderr)
        return 130
    print(render_table(report.cases))
    print(summary_line(report))
    if args.report is not None:
        write_json(report, args.report)
    return report.exit_code()


def _check_arguments(args: argparse.Namespace) -> str | None:
    if args.keyring is None:
        return "--keyring DIR is required: the PED's keys, with the orange key of the HSM's RPV"
    if not Keyring(args.keyring).keys(color=Color.ORANGE):
        return f"{args.keyring} holds no orange key (provision the HSM's RPV on it first)"
    try:
        args.words = parse_step_overrides(args.step)
    except ValueError as exc:
        return str(exc)
    for option, pattern in (("--counter-pattern", args.counter_pattern),
                            ("--connected-pattern", args.connected_pattern)):
        try:
            re.compile(pattern)
        except re.error as exc:  # else every case would fail on it, blaming the HSM
            return f"{option} {pattern!r} is not a regular expression: {exc}"
    if args.cases:
        unknown = [c for c in args.cases if c not in RUNNERS]
        if unknown:
            return f"unknown case(s) {', '.join(unknown)}; `pedconform hsm --list` lists them"
    if args.listen is None and args.pedclient is None:
        args.listen = "127.0.0.1:0"
    if args.listen is not None:
        host, sep, port = args.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            return f"--listen {args.listen!r}: give IP:PORT"
    return None


async def _run(args: argparse.Namespace) -> RunReport:
    wire = Wire()
    if args.trace:
        wire.trace = _print_record
    ped = FaultyPed(args.keyring, wire)
    failure: StepError | OSError | None = None
    cases: list[CaseResult] = []
    try:
        async with trio.open_nursery() as nursery:
            try:
                cases = await _serve_and_run(args, LinkServer(ped), nursery)
            except (StepError, OSError) as exc:  # raised here, not as an ExceptionGroup
                failure = exc
            nursery.cancel_scope.cancel()
    finally:
        ped.wipe()
    if failure is not None:
        raise failure
    target = args.hsm_cmd or "an HSM run by hand"
    return RunReport("hsm", target, tuple(cases))


async def _serve_and_run(
    args: argparse.Namespace, server: LinkServer, nursery: trio.Nursery
) -> list[CaseResult]:
    values = {"host": "", "port": "", "address": "", "pedclient": ""}
    if args.listen is not None:
        host, _, port = args.listen.rpartition(":")
        try:
            bound = await nursery.start(server.serve_tcp, host, int(port))
        except OSError as exc:
            raise OSError(f"cannot listen on {args.listen}: {exc.strerror or exc}") from None
        values.update(host=host, port=str(bound), address=f"{host}:{bound}")
        print(f"pedconform hsm: the PED listens as pedserver on {host}:{bound}")
    if args.pedclient is not None:
        await nursery.start(server.serve_unix, args.pedclient)
        values["pedclient"] = str(args.pedclient)
        print(f"pedconform hsm: the PED's local endpoint is {args.pedclient}")
    runner = StepRunner(args.hsm_cmd, values, args.words, timeout=args.step_timeout,
                        trace=args.trace)
    ctx = Context(server.ped, runner, args.counter_pattern, args.connected_pattern,
                  slow_limit=args.slow_limit)
    return await _run_cases(ctx, args.cases)


def _print_record(record: Record) -> None:
    detail = f": {record.detail}" if record.detail else ""
    print(f"  [{record.seconds:9.3f}] link {record.link} {record.kind}{detail}", flush=True)


async def _run_cases(ctx: Context, wanted: list[str] | None) -> list[CaseResult]:
    chosen = set(wanted or RUNNERS)
    chosen |= {"1.1", "1.2"} if chosen - {"1.1", "1.2"} else set()  # others need a set-up HSM
    results = []
    for spec in CASES:
        if spec.case not in chosen:
            continue
        print(f"pedconform hsm: case {spec.case} {spec.title}...", flush=True)
        try:
            results.append(await RUNNERS[spec.case](ctx, spec))
        except StepError:
            raise
        except Exception as exc:  # a case that breaks must not hide the others
            results.append(CaseResult(spec.case, spec.title, spec.section, spec.expected,
                                      f"the case itself failed: {exc!r}", CaseOutcome.FAIL,
                                      spec.required))
    return results




def main(argv: list[str] | None = None) -> int:
    """``python -m pedtools.conform.hsm_suite ARGS``: the same as ``pedconform hsm ARGS``."""
    parser = argparse.ArgumentParser(prog="pedconform hsm", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
