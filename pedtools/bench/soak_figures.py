"""The soak's arithmetic: per-daemon samples in; growth slopes, fds, latency, verdict out.

Sans-IO: the driver (`pedtools.bench.soak`) hands over what it sampled; nothing here
reads /proc or a clock, so the tests check the arithmetic on synthetic samples.

A `Sample` is one daemon's state at one moment: how many operations it had served, its
resident memory (VmRSS, kB), its open file descriptors and its log's size.  Per daemon:

* ``rss_kb_per_10k_ops``: the least-squares slope of RSS over operations, fitted on the
  samples after the warm-up, times 10,000;
* ``fds_start``/``fds_end``: open fds at the first sample after the warm-up and at the
  last one;
* ``log_bytes_per_op``: what its log grew by over the measured operations, per operation;
* ``rss_kb_by_tenth``: RSS at the start and after each tenth of its operations (whether
  it levels off, at a glance);
* ``rss_kb_median_by_tenth`` and ``rss_kb_per_10k_ops_last_half``: whether it levels
  off, read so that the allocator's saw-tooth (a trim returns pages, the next operations
  touch them again) does not decide it: the median RSS of each tenth of the operations,
  and the slope fitted over the last half of the measured samples alone.  A leak grows
  as fast in the last half as over the whole; the allocators' settling slows down.  The
  verdict stays the whole fit's;
* ``rss_rises``: each rise of RSS after the warm-up, as (operations, kB): a leak climbs
  a staircase of pages spread over the run; warm-up and the allocator's high-water mark
  show as a few isolated steps (a linear fit over one late step still reports a slope,
  so read the two together; the verdict stays the fitted slope's);
* ``rss_slope_stderr``: the fit's standard error (kB per 10,000 operations; RSS moves in
  steps, so consecutive samples are not independent and this understates the doubt);
* ``resolution_kb_per_10k_ops``: one page (`PAGE_KB`) over the measured operations: the
  smallest growth the run can see at all.  The limit needs ``PAGE_KB * 10,000 /
  RSS_LIMIT_KB`` measured operations (40,000) before one page means "over the limit",
  and several times that before the verdict stops hanging on a single page.

The run FAILS if any daemon grows by more than `RSS_LIMIT_KB` per 10,000 operations or
ends with more fds than it started with; `failures` names each daemon and figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from statistics import median
from typing import Any

import attrs

from pedtools.bench.stats import percentile

#: RSS growth per 10,000 operations over which a run fails (issue 20: "~1 kB").
RSS_LIMIT_KB = 1.0
#: The share of a daemon's samples (by operations) left out of the fit as warm-up ...
WARMUP_SHARE = 0.2
#: ... and at least this many operations (caches, allocator arenas and the high-water
#: mark of transient buffers fill over the first few thousand), if half the run remains.
WARMUP_MIN_OPS = 2000
#: How many rises of RSS after the warm-up a daemon's figures list one by one.
RISES_SHOWN = 12
#: RSS moves in pages of this many kB.
PAGE_KB = 4
#: A run at least this long reports its first and last minute; a shorter one its first
#: and last tenth.
MINUTE = 60.0


@attrs.frozen
class Sample:
    ops: int
    rss_kb: int
    fds: int
    #: the size of the daemon's log file(s) in bytes (0 if it has none)
    log_bytes: int = 0
    #: VmRSS split by the kernel: anonymous pages (heap, arenas: what a leak grows) and
    #: file-backed pages (code and data mapped from disk); 0 in runs that predate them
    rss_anon_kb: int = 0
    rss_file_kb: int = 0


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of *ys* over *xs* (0.0 when the xs do not vary)."""
    n = len(xs)
    if n != len(ys):
        raise ValueError("slope: xs and ys differ in length")
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def after_warmup(samples: Sequence[Sample], share: float = WARMUP_SHARE,
                 min_ops: int = WARMUP_MIN_OPS) -> list[Sample]:
    """The samples taken once the daemon had served *share* of its operations and at
    least *min_ops* (unless that would leave out more than half the run)."""
    if not samples:
        return []
    first, last = samples[0].ops, samples[-1].ops
    span = last - first
    cut = first + min(max(span * share, min_ops), span / 2)
    return [s for s in samples if s.ops >= cut]


def slope_stderr(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The standard error of `slope` (0.0 with fewer than three points)."""
    n = len(xs)
    if n < 3:
        return 0.0
    mx = sum(xs) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    b = slope(xs, ys)
    a = sum(ys) / n - b * mx
    residual = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return float((residual / (n - 2) / sxx) ** 0.5)


def daemon_figures(samples: Sequence[Sample], has_log: bool = True) -> dict[str, Any]:
    """One daemon's figures from its samples (*has_log*: it writes a log of its own)."""
    kept = after_warmup(samples)
    if len(kept) < 2:
        raise ValueError("too few samples after the warm-up to fit a slope")
    ops = kept[-1].ops - kept[0].ops
    xs, ys = [s.ops for s in kept], [s.rss_kb for s in kept]
    per_op = slope(xs, ys)
    return {
        "operations": samples[-1].ops,
        "measured_operations": ops,
        "samples": len(kept),
        "rss_kb_start": kept[0].rss_kb,
        "rss_kb_end": kept[-1].rss_kb,
        "rss_kb_per_10k_ops": round(per_op * 10_000, 2),
        "rss_slope_stderr": round(slope_stderr(xs, ys) * 10_000, 2),
        "resolution_kb_per_10k_ops": round(PAGE_KB * 10_000 / ops, 2) if ops else None,
        "fds_start": kept[0].fds,
        "fds_end": kept[-1].fds,
        "log_bytes_per_op": (round((kept[-1].log_bytes - kept[0].log_bytes) / ops, 2)
                             if has_log and ops else None),
        "rss_kb_by_tenth": by_tenth(samples),
        "rss_kb_median_by_tenth": median_by_tenth(samples),
        "rss_kb_per_10k_ops_last_half": round(last_half_slope(kept) * 10_000, 2),
        "rss_rises": rises(kept),
        "rss_anon_kb_per_10k_ops": round(slope(xs, [s.rss_anon_kb for s in kept]) * 10_000, 2),
        "rss_file_kb_per_10k_ops": round(slope(xs, [s.rss_file_kb for s in kept]) * 10_000, 2),
        "rss_anon_kb_start": kept[0].rss_anon_kb,
        "rss_anon_kb_end": kept[-1].rss_anon_kb,
        "rss_file_kb_start": kept[0].rss_file_kb,
        "rss_file_kb_end": kept[-1].rss_file_kb,
    }


def rises(samples: Sequence[Sample], most: int = RISES_SHOWN) -> list[list[int]]:
    """Each sample whose RSS is above the previous one's: (operations, kB risen); only the
    first *most*, then one entry summing the rest at the last one's operations."""
    found = [[b.ops, b.rss_kb - a.rss_kb] for a, b in pairwise(samples)
             if b.rss_kb > a.rss_kb]
    if len(found) > most:
        rest = found[most - 1:]
        found = [*found[:most - 1], [rest[-1][0], sum(kb for _, kb in rest)]]
    return found


def traced_figures(points: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """The debug hook's figure for one daemon: *points* are (operations, bytes Python
    held after a collection); the fitted growth over the points after the warm-up (the
    first is the baseline, so at least two are kept)."""
    samples = [Sample(ops, held, 0) for ops, held in points]
    kept = after_warmup(samples)
    if len(kept) < 2:
        kept = samples[-2:]
    xs, ys = [s.ops for s in kept], [s.rss_kb for s in kept]
    per_op = slope(xs, ys)
    return {"points": [list(p) for p in points],
            "bytes_per_10k_ops": round(per_op * 10_000, 1)}


#: The figures below Python (`ped.daemon.memstats`) a ``--memstats`` run tabulates, in
#: the order a reader follows them: the kernel's split, glibc's heap, pymalloc's arenas,
#: and Python's live blocks (a count, read at a quiet point between rounds).
NATIVE_SHOWN = ("rss_anon", "rss_file", "malloc_heap", "malloc_in_use", "malloc_free",
                "malloc_mmapped", "pymalloc_arenas", "pymalloc_allocated",
                "pymalloc_unused_pools", "py_blocks")
#: Those that are counts, not bytes: shown as they are, not in kB.
NATIVE_COUNTS = ("pymalloc_arenas", "py_blocks")


def native_figures(points: Sequence[tuple[int, dict[str, int]]]) -> dict[str, Any]:
    """One daemon's figures below Python: *points* are (operations, figures) from its
    reports; per figure, its value at the first report after the warm-up and at the last,
    and its fitted growth per 10,000 operations over those (bytes; arenas for the count)."""
    samples = [Sample(ops, i, 0) for i, (ops, _) in enumerate(points)]
    kept = [points[s.rss_kb] for s in after_warmup(samples)]
    if len(kept) < 2:
        kept = list(points[-2:])
    xs = [ops for ops, _ in kept]
    out: dict[str, Any] = {"reports": len(points), "from_ops": xs[0] if xs else None}
    for name in NATIVE_SHOWN:
        if len(kept) < 2 or any(name not in figs for _, figs in kept):
            continue  # a figure this platform (or a traced run) does not give
        ys = [figs[name] for _, figs in kept]
        out[name] = {"first": ys[0], "last": ys[-1],
                     "per_10k_ops": round(slope(xs, ys) * 10_000, 1)}
    return out


def refit(results: dict[str, Any], without_log: Sequence[str] = ("pedemu",)) -> dict[str, Any]:
    """*results* of a run (its JSON) with every daemon's figures, the traced figures and
    the verdict computed again from the samples it kept (after a change to the fit)."""
    samples = {name: [Sample(*raw) for raw in rows] for name, rows in results["samples"].items()}
    daemons = {name: daemon_figures(rows, name not in without_log)
               for name, rows in samples.items()}
    traced = {name: traced_figures([(ops, held) for ops, held in t["points"]])
              for name, t in (results.get("traced") or {}).items()}
    native = {name: native_figures([(ops, figs) for ops, figs in points])
              for name, points in (results.get("native") or {}).items()}
    return {**results, "daemons": daemons, "traced": traced, "native_figures": native,
            "failures": failures(daemons, native=native)}


def by_tenth(samples: Sequence[Sample]) -> list[int]:
    """RSS at the start and after each tenth of the operations (levelling off or not)."""
    first, last = samples[0].ops, samples[-1].ops
    out: list[int] = []
    at = 0
    for tenth in range(11):
        cut = first + (last - first) * tenth / 10
        while at < len(samples) - 1 and samples[at].ops < cut:
            at += 1
        out.append(samples[at].rss_kb)
    return out


def median_by_tenth(samples: Sequence[Sample]) -> list[int]:
    """The median RSS of the samples in each tenth of the operations (ten values; a
    tenth with no sample repeats the one before it)."""
    first, last = samples[0].ops, samples[-1].ops
    span = last - first
    tenths: list[list[int]] = [[] for _ in range(10)]
    for s in samples:
        at = min(int((s.ops - first) * 10 / span), 9) if span else 9
        tenths[at].append(s.rss_kb)
    out: list[int] = []
    for values in tenths:
        out.append(int(median(values)) if values else (out[-1] if out else samples[0].rss_kb))
    return out


def last_half_slope(kept: Sequence[Sample]) -> float:
    """The least-squares slope of RSS over operations fitted on the samples of the last
    half of *kept*'s operations alone."""
    if not kept:
        return 0.0
    mid = (kept[0].ops + kept[-1].ops) / 2
    half = [s for s in kept if s.ops >= mid]
    return slope([s.ops for s in half], [s.rss_kb for s in half])


def failures(daemons: dict[str, dict[str, Any]], limit_kb: float = RSS_LIMIT_KB,
             native: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Each daemon that grew: its name and the figure, one line each; with *native*
    (`native_figures` by daemon, a ``--memstats`` run) the line also says where the growth
    sits below Python."""
    found: list[str] = []
    for name, d in daemons.items():
        growth = d["rss_kb_per_10k_ops"]
        if growth > limit_kb:
            found.append(f"{name}: RSS grows {growth} kB per 10,000 operations "
                         f"(limit {limit_kb:g} kB; {d['rss_kb_start']} -> {d['rss_kb_end']} kB "
                         f"over {d['measured_operations']} operations; one page is "
                         f"{d['resolution_kb_per_10k_ops']} kB per 10,000 of them)"
                         + where_it_sits((native or {}).get(name)))
        if d["fds_end"] > d["fds_start"]:
            found.append(f"{name}: open fds grew from {d['fds_start']} to {d['fds_end']}")
    return found


def window(duration: float) -> float:
    """How long the first and last latency windows are for a run of *duration* s."""
    return MINUTE if duration >= 10 * MINUTE else duration / 10


def latency_windows(times: Sequence[tuple[float, float]], duration: float) -> dict[str, Any]:
    """p50/p99 of the operations that started in the first and in the last window;
    *times* are (start s since the run began, latency ms)."""
    w = window(duration)
    first = [ms for t, ms in times if t < w]
    last = [ms for t, ms in times if t >= duration - w]
    return {
        "window_s": round(w, 1),
        "count": len(times),
        "first_p50_ms": percentile(first, 50),
        "first_p99_ms": percentile(first, 99),
        "last_p50_ms": percentile(last, 50),
        "last_p99_ms": percentile(last, 99),
    }


def where_it_sits(native: dict[str, Any] | None) -> str:
    """The fitted growth below Python, for a failure line: the resident split, then what
    each allocator spans and what it holds in use ("" without the figures)."""
    if not native:
        return ""

    def kb(name: str) -> str:
        figure = native.get(name)
        return "?" if figure is None else f"{figure['per_10k_ops'] / 1024:+.2f}"

    held = f"; pymalloc holds {kb('pymalloc_allocated')}" if "pymalloc_allocated" in native else ""
    blocks = native.get("py_blocks")
    kept = ("" if blocks is None else
            f"; Python keeps {blocks['per_10k_ops']:+.1f} live blocks per 10,000 operations")
    return (f"; below Python, kB per 10,000 operations: RssAnon {kb('rss_anon')}, RssFile "
            f"{kb('rss_file')}; glibc's heap spans {kb('malloc_heap')} and holds "
            f"{kb('malloc_in_use')} in use{held}{kept}")


def native_cell(figure: dict[str, Any] | None, name: str) -> str:
    if figure is None:
        return "-"
    if name == "pymalloc_arenas":
        return f"{figure['first']} -> {figure['last']}"
    if name in NATIVE_COUNTS:
        return f"{figure['first']} -> {figure['last']} ({figure['per_10k_ops']:+.1f})"
    return (f"{figure['first'] // 1024} -> {figure['last'] // 1024} "
            f"({figure['per_10k_ops'] / 1024:+.2f})")


def rises_text(found: Sequence[Sequence[int]]) -> str:
    return ", ".join(f"{ops}: +{kb}" for ops, kb in found) or "none"


def markdown(r: dict[str, Any]) -> str:
    """The soak's tables, as README and RESULTS.md show them."""
    lines = [
        f"Soak: {r['rounds']} rounds in {r['seconds']} s (each round one `hsm login` "
        "through the remote PED and one PKCS#11 sign through hsmclient); warm-up "
        f"{int(WARMUP_SHARE * 100)}% of each daemon's operations (at least "
        f"{WARMUP_MIN_OPS:,}), left out of the fit.",
        "",
        "| daemon | operations | RSS kB start -> end | RSS growth kB / 10,000 ops (± stderr) "
        "| one page = kB / 10,000 ops | rises after warm-up (at op: +kB) | fds start -> end "
        "| log bytes / op |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, d in r["daemons"].items():
        log = d["log_bytes_per_op"]
        lines.append(f"| {name} | {d['operations']} | {d['rss_kb_start']} -> "
                     f"{d['rss_kb_end']} | {d['rss_kb_per_10k_ops']} "
                     f"± {d['rss_slope_stderr']} | {d['resolution_kb_per_10k_ops']} | "
                     f"{rises_text(d['rss_rises'])} | {d['fds_start']} -> {d['fds_end']} | "
                     f"{'(none)' if log is None else log} |")
    if all("rss_kb_median_by_tenth" in d for d in r["daemons"].values()):
        lines += ["", "Does it level off? The median RSS (kB) of each tenth of a daemon's "
                  "operations, and the growth fitted over the last half of the measured "
                  "operations alone (kB / 10,000 ops; a leak grows as fast there as over the "
                  "whole).", "",
                  "| daemon | " + " | ".join(f"{t * 10}-{t * 10 + 10}%" for t in range(10))
                  + " | last half kB / 10,000 ops |",
                  "| --- | " + " | ".join("---" for _ in range(11)) + " |"]
        for name, d in r["daemons"].items():
            lines.append(f"| {name} | " + " | ".join(map(str, d["rss_kb_median_by_tenth"]))
                         + f" | {d['rss_kb_per_10k_ops_last_half']} |")
    traced = r.get("traced") or {}
    if traced:
        lines += ["", "With the memory debug hook (`--tracemalloc`): what Python holds after "
                  "a collection, fitted after the warm-up.", "",
                  "| daemon | reports | traced bytes first -> last | traced growth "
                  "bytes / 10,000 ops |", "| --- | --- | --- | --- |"]
        for name, t in traced.items():
            points = t["points"]
            lines.append(f"| {name} | {len(points)} | {points[0][1]} -> {points[-1][1]} | "
                         f"{t['bytes_per_10k_ops']} |")
    native = r.get("native_figures") or {}
    if native:
        lines += ["", "Below Python (`--memstats`): each figure after the warm-up, first -> last "
                  "kB, and its fitted growth in kB per 10,000 operations (pymalloc's arenas, and "
                  "Python's live blocks read between rounds, `py_blocks`: counts).", "",
                  "| daemon | reports | " + " | ".join(NATIVE_SHOWN) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in NATIVE_SHOWN) + " |"]
        for name, f in native.items():
            cells = [native_cell(f.get(key), key) for key in NATIVE_SHOWN]
            lines.append(f"| {name} | {f['reports']} | " + " | ".join(cells) + " |")
    lines += ["", "| operation | count | window s | first p50 ms | first p99 ms | "
                  "last p50 ms | last p99 ms |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, lat in r["latency"].items():
        lines.append(f"| {name} | {lat['count']} | {lat['window_s']} | {lat['first_p50_ms']} "
                     f"| {lat['first_p99_ms']} | {lat['last_p50_ms']} | {lat['last_p99_ms']} |")
    lines.append("")
    if r.get("malloc_arena_max"):
        lines += [f"Run with MALLOC_ARENA_MAX={r['malloc_arena_max']}.", ""]
    audit = r.get("pedhsm_audit_bytes_per_login")
    if audit is not None:
        lines += [f"pedhsm's audit log (a record per login and logout, not a log level's "
                  f"output): {audit} bytes per login.", ""]
    if r["failures"]:
        lines += ["FAILED:", *[f"- {f}" for f in r["failures"]]]
    else:
        lines.append("Passed: no daemon grew over "
                     f"{RSS_LIMIT_KB:g} kB per 10,000 operations, no fd growth.")
    return "\n".join(lines) + "\n"
