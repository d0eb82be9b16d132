"""``make soak``: every daemon driven through many operations, its memory and fds sampled.

    python -m pedtools.bench.soak [--minutes M | --operations N] [--out FILE]
                                  [--markdown FILE] [--keep]
                                  [--tracemalloc [--tracemalloc-every N]]

Sets up both paths as processes (`pedtools.bench.soak_site`): pedhsm logged in through
its remote PED (pedhsm -> pedclient -> pedserver -> emulated PED, auto operator) and
serving PKCS#11 through hsmclient and its client listener (standing for 1792).  Then,
round after round, one ``hsm logout`` + ``hsm login`` (a blue key read on the remote PED;
the same control requests `pedhsm hsm login` sends) and one C_Sign (ECDSA P-256 through
``p11-kit-client.so``, `pedtools.bench.clientpath_client`), each timed; every few rounds
each daemon's VmRSS and open fds are read from /proc and its log's size from its home.
The figures and the verdict are `pedtools.bench.soak_figures`.

A daemon's operations are the ones it serves: pedclient, pedserver and the emulated PED
serve the logins, hsmclient the signs, pedhsm both.  ``--minutes`` (default
``SOAK_MINUTES``, else 2) bounds the run by time; ``--operations N`` runs exactly N
rounds instead.  ``--tracemalloc`` starts pedhsm, pedclient, pedserver and hsmclient with
the memory debug hook (`ped.daemon.memtrace`, ``PED_TRACEMALLOC``) and, every N rounds,
sends each SIGUSR2 and reads what Python holds after a collection: a measure in bytes,
beside RSS's 4 kB pages (the daemons run about three times slower while traced).  Exit
status 1 when a daemon grew (RSS or fds), the daemon and the figure
named; 2 when the rig failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from ped.daemon.control import control_request_sync
from ped.daemon.memtrace import ENV as MEMTRACE_ENV
from ped.daemon.memtrace import STATS_ENV as MEMSTATS_ENV
from ped.daemon.memtrace import report_count, report_figures, traced_bytes
from pedtools.bench.clientpath_client import operation
from pedtools.bench.clientpath_site import P11KIT_CLIENT
from pedtools.bench.procs import rss_kib, rss_split_kib
from pedtools.bench.soak_figures import (
    Sample,
    after_warmup,
    daemon_figures,
    failures,
    latency_windows,
    markdown,
    native_figures,
    refit,
    traced_figures,
)
from pedtools.bench.soak_site import DAEMONS, LABEL, SoakSite
from pedtools.testing.procs import Site

DEFAULT_MINUTES = 2.0
#: Sample every daemon after this many rounds.
SAMPLE_EVERY = 5
#: With ``--tracemalloc``, ask every traced daemon for its report after this many rounds.
TRACE_EVERY = 1000
#: The daemons the debug hook traces (the emulated PED and hsmclient never grew).
TRACED = ("pedhsm", "pedclient", "pedserver", "hsmclient")
#: Which operations each daemon serves (a round is one login and one sign).
SERVES = {"pedhsm": ("login", "sign"), "pedclient": ("login",), "pedserver": ("login",),
          "pedemu": ("login",), "hsmclient": ("sign",)}

Log = Callable[[str], None]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def file_size(path: Path | None) -> int:
    if path is None:
        return 0
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class Soak:
    """The running soak: its operations, its samples, its latencies."""

    def __init__(self, soak_site: SoakSite, trace_dir: Path | None = None,
                 trace_every: int = TRACE_EVERY) -> None:
        self.ss = soak_site
        self.trace_dir = trace_dir
        self.trace_every = trace_every
        #: per traced daemon: (operations served, bytes Python held), one per report
        self.traced: dict[str, list[tuple[int, int]]] = {name: [] for name in TRACED}
        #: per traced daemon: (operations served, the figures below Python), one per report
        self.native: dict[str, list[tuple[int, dict[str, int]]]] = {n: [] for n in TRACED}
        cps = soak_site.cps
        # p11-kit-client reads the address when it is loaded, in this process.
        os.environ["P11_KIT_SERVER_ADDRESS"] = cps.address
        self.sign = operation({"mode": "sign", "module": str(P11KIT_CLIENT), "label": LABEL,
                               "challenge_file": str(cps.challenge_file)})
        self.count = {"login": 0, "sign": 0}
        self.times: dict[str, list[tuple[float, float]]] = {"login": [], "sign": []}
        self.samples: dict[str, list[Sample]] = {name: [] for name in DAEMONS}
        self.audit: list[tuple[int, int]] = []  # (logins, audit log bytes)
        self.login()  # starts the emulated PED process: only then are all pids known
        self.sign()
        self.pids = soak_site.pids()
        self.logs = soak_site.logs()

    def login(self) -> None:
        control_request_sync(self.ss.hsm_control, "hsm.logout", {}, timeout=60.0)
        control_request_sync(self.ss.hsm_control, "hsm.login", {}, timeout=60.0)

    def sample(self) -> None:
        for name, pid in self.pids.items():
            ops = sum(self.count[kind] for kind in SERVES[name])
            anon, mapped = rss_split_kib(pid)
            self.samples[name].append(Sample(ops, rss_kib(pid), open_fds(pid),
                                             file_size(self.logs[name]), anon, mapped))
        self.audit.append((self.count["login"], file_size(self.ss.audit_log)))

    def trace_path(self, name: str) -> Path:
        assert self.trace_dir is not None
        return self.trace_dir / f"memtrace-{name}.txt"

    def trace_sample(self, timeout: float = 120.0) -> None:
        """SIGUSR2 to every traced daemon; wait for each new report; keep its figure."""
        if self.trace_dir is None:
            return
        before = {name: report_count(self.trace_path(name)) for name in TRACED}
        for name in TRACED:
            os.kill(self.pids[name], signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        for name in TRACED:
            path = self.trace_path(name)
            while report_count(path) <= before[name]:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} wrote no tracemalloc report ({path})")
                time.sleep(0.05)
            ops = sum(self.count[kind] for kind in SERVES[name])
            self.traced[name].append((ops, traced_bytes(path) or 0))
            self.native[name].append((ops, report_figures(path)))

    def round(self, started: float) -> None:
        for kind, op in (("login", self.login), ("sign", self.sign)):
            t0 = time.perf_counter()
            op()
            self.times[kind].append((t0 - started, (time.perf_counter() - t0) * 1000))
            self.count[kind] += 1

    def run(self, seconds: float | None, rounds: int | None, log: Log) -> float:
        """Rounds until *seconds* have passed or *rounds* are done; the run's length."""
        started = time.perf_counter()
        self.sample()
        done = 0
        next_note = started + 30.0
        while True:
            now = time.perf_counter()
            if rounds is not None and done >= rounds:
                break
            if rounds is None and seconds is not None and now - started >= seconds:
                break
            self.round(started)
            done += 1
            if done % SAMPLE_EVERY == 0:
                self.sample()
            if done % self.trace_every == 0:
                self.trace_sample()
            if now >= next_note:
                next_note = now + 30.0
                log(f"{done} rounds, {now - started:.0f} s")
        self.sample()
        if done % self.trace_every:  # (else the last round's report is the last one)
            self.trace_sample()
        return time.perf_counter() - started


def figures(soak: Soak, seconds: float) -> dict[str, Any]:
    daemons = {name: daemon_figures(soak.samples[name], soak.logs[name] is not None)
               for name in DAEMONS}
    audit = [Sample(ops, 0, 0, size) for ops, size in soak.audit]
    kept = after_warmup(audit)
    logins = kept[-1].ops - kept[0].ops if kept else 0
    native = {name: native_figures(points) for name, points in soak.native.items() if points}
    return {
        "rounds": soak.count["sign"],
        "seconds": round(seconds, 1),
        "daemons": daemons,
        "latency": {kind: latency_windows(soak.times[kind], seconds)
                    for kind in ("login", "sign")},
        "pedhsm_audit_bytes_per_login": (round((kept[-1].log_bytes - kept[0].log_bytes)
                                               / logins, 1) if logins else None),
        "failures": failures(daemons, native=native),
        "pids": soak.pids,
        # every sample, so that the figures can be fitted again (another warm-up, a plot)
        "samples": {name: [list(attrs.astuple(s)) for s in soak.samples[name]]
                    for name in DAEMONS},
        "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
        "traced": {name: traced_figures(points) for name, points in soak.traced.items()
                   if len(points) >= 3 and any(held for _, held in points)},
        "native": {name: [[ops, figs] for ops, figs in points]
                   for name, points in soak.native.items() if points},
        "native_figures": native,
    }


def run(work: Path, seconds: float | None, rounds: int | None, log: Log,
        trace_every: int | None = None, tracing: bool = True) -> dict[str, Any]:
    """The soak in *work*; *trace_every*: run the daemons with the memory debug hook and
    ask for its report every so many rounds (*tracing*: with tracemalloc, else only the
    figures below Python)."""
    site = Site(work / "site")
    trace_dir = work if trace_every else None
    if trace_dir is not None:
        env = MEMTRACE_ENV if tracing else MEMSTATS_ENV
        site.env[env] = str(trace_dir / "memtrace-{prog}.txt")
    try:
        ss = SoakSite(site)
        log("setting up pedhsm, pedclient, pedserver, the emulated PED and hsmclient ...")
        ss.up()
        soak = Soak(ss, trace_dir, trace_every or TRACE_EVERY)
        what = f"{rounds} rounds" if rounds is not None else f"{seconds:g} s"
        log(f"soaking for {what} ...")
        took = soak.run(seconds, rounds, log)
        return figures(soak, took)
    finally:
        site.close()


def minutes_default() -> float:
    """``SOAK_MINUTES`` if set (make passes it empty when unset), else the default."""
    raw = os.environ.get("SOAK_MINUTES", "").strip()
    if not raw:
        return DEFAULT_MINUTES
    try:
        return float(raw)
    except ValueError:
        return float("nan")  # refused by main, with the variable named


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pedtools.bench.soak",
        description="Soak every daemon (logins through the remote PED, PKCS#11 signs "
        "through hsmclient); report memory and fd growth, log volume and latency.",
    )
    parser.add_argument("--minutes", type=float, default=None, metavar="M",
                        help=f"how long to run (default SOAK_MINUTES, else "
                        f"{DEFAULT_MINUTES:g})")
    parser.add_argument("--operations", type=int, default=None, metavar="N",
                        help="run exactly N rounds (one login and one sign each) instead")
    parser.add_argument("--out", default="soak-results.json", metavar="FILE",
                        help="where to write the JSON results (default soak-results.json)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables as markdown")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="run pedhsm, pedclient, pedserver and hsmclient with the "
                        f"memory debug hook ({MEMTRACE_ENV}) and report the bytes Python "
                        "holds every --tracemalloc-every rounds beside RSS (slower; the "
                        "reports are left in the work directory with --keep)")
    parser.add_argument("--memstats", action="store_true",
                        help=f"run the same daemons with the hook untraced ({MEMSTATS_ENV}): "
                        "every --tracemalloc-every rounds, where their memory sits below "
                        "Python (RssAnon/RssFile, glibc's heap, pymalloc's arenas), at full "
                        "speed")
    parser.add_argument("--tracemalloc-every", type=int, default=TRACE_EVERY, metavar="N",
                        help=f"with --tracemalloc or --memstats: rounds between reports "
                        f"(default {TRACE_EVERY})")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (every daemon's home and log)")
    parser.add_argument("--refit", metavar="JSON",
                        help="run nothing: fit the samples a run kept in JSON again (the "
                        "current warm-up and figures), write --out and print the tables")
    args = parser.parse_args(argv)
    if args.refit:
        return report(refit(json.loads(Path(args.refit).read_text())), args.out,
                      args.markdown)
    if args.operations is not None and args.operations < 10:
        parser.error("--operations: at least 10 rounds (the fit needs samples)")
    if args.tracemalloc_every < 1:
        parser.error("--tracemalloc-every: at least 1")
    rounds = args.operations
    minutes = args.minutes if args.minutes is not None else minutes_default()
    if not minutes > 0:
        parser.error("--minutes (or SOAK_MINUTES) must be more than 0")
    seconds = None if rounds is not None else 60.0 * minutes
    work = Path(tempfile.mkdtemp(prefix="ped-soak-"))

    def log(text: str) -> None:
        print(f"[soak] {text}", file=sys.stderr, flush=True)

    stopped_by = [signal.SIGINT]

    def stop(signum: int, _frame: object) -> None:
        stopped_by[0] = signal.Signals(signum)
        raise KeyboardInterrupt

    # A soak stopped by kill (or a CI's timeout) unwinds as on Ctrl-C: the site stops the
    # daemons it started.
    signal.signal(signal.SIGTERM, stop)
    try:
        hooked = args.tracemalloc or args.memstats
        results = run(work, seconds, rounds, log,
                      trace_every=args.tracemalloc_every if hooked else None,
                      tracing=args.tracemalloc)
    except KeyboardInterrupt:
        log(f"stopped by {stopped_by[0].name}: the daemons were stopped; no figures")
        return 128 + stopped_by[0]
    except Exception as exc:
        log(f"the soak rig failed: {type(exc).__name__}: {exc}")
        args.keep = True
        return 2
    finally:
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return report(results, args.out, args.markdown)


def report(results: dict[str, Any], out: str, markdown_file: str | None) -> int:
    """Write the JSON and the tables; the exit status (1: a daemon grew)."""
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    print(table)
    if markdown_file:
        Path(markdown_file).write_text(table)
    for failure in results["failures"]:
        print(f"[soak] FAILURE: {failure}", file=sys.stderr, flush=True)
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
