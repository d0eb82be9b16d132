"""The memory debug hook: ``PED_TRACEMALLOC=FILE`` traces allocations, reports growth on SIGUSR2.

Off unless the variable is set (tracing costs time and memory; never in production
by default).  ``PED_MEMSTATS=FILE`` is the same hook without tracing: each report gives
only the figures below Python (`ped.daemon.memstats`: the kernel's RssAnon/RssFile,
glibc's heap, pymalloc's arenas), at no cost between reports.  ``FILE`` may hold
``{prog}``, replaced by the daemon's name, so that one variable serves every daemon of a
host.  At start the daemon begins tracing (`tracemalloc`, `FRAMES` frames per
allocation); at each SIGUSR2, and when the process
exits, it collects garbage and rewrites ``FILE`` with:

* ``traced_bytes N``: the bytes Python holds now (cheap: the soak reads this line;
  0 under ``PED_MEMSTATS``);
* ``baseline_bytes N``: the same at the first SIGUSR2 (the baseline), and the number of
  reports since;
* one ``NAME N`` line per figure below Python (`ped.daemon.memstats.native_stats`);
* when tracing, the allocation sites that grew most since the baseline (by traceback),
  and the object types whose live count grew most (``gc.get_objects``).

The report names code lines and type names, never a value: no secret reaches the file.
The file is written owner-only, like every file a daemon makes.
"""

from __future__ import annotations

import atexit
import collections
import gc
import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType

from ped.daemon.memstats import native_stats

#: The variable that turns the hook on; its value is the report's path.
ENV = "PED_TRACEMALLOC"
#: The variable that turns on the hook without tracing (the figures below Python only).
STATS_ENV = "PED_MEMSTATS"
#: Frames kept per allocation: enough to see which structure an allocation lands in.
FRAMES = 12
#: How many allocation sites and types the report lists.
TOP = 25


def type_counts() -> collections.Counter[str]:
    """Live objects tracked by the collector, counted by type name."""
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


class MemTrace:
    """Tracing in one process: the baseline and the report (see the module docstring)."""

    def __init__(self, path: Path, frames: int = FRAMES, trace: bool = True) -> None:
        self.path = path
        self.trace = trace
        self.baseline: tracemalloc.Snapshot | None = None
        self.baseline_bytes = 0
        self.baseline_types: collections.Counter[str] = collections.Counter()
        self.reports = 0
        if trace and not tracemalloc.is_tracing():
            tracemalloc.start(frames)

    def report(self) -> str:
        """Collect, snapshot, and the report's text (the first call sets the baseline)."""
        gc.collect()
        native = [f"{name} {value}" for name, value in native_stats().items()]
        if not self.trace:
            self.reports += 1
            return "\n".join(["traced_bytes 0", "baseline_bytes 0",
                              f"reports {self.reports}", *native]) + "\n"
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        traced = tracemalloc.get_traced_memory()[0]
        types = type_counts()
        self.reports += 1
        if self.baseline is None:
            self.baseline, self.baseline_bytes, self.baseline_types = snapshot, traced, types
        lines = [f"traced_bytes {traced}", f"baseline_bytes {self.baseline_bytes}",
                 f"reports {self.reports}", *native, "",
                 f"# top {TOP} allocation sites grown since the baseline (size diff, "
                 "count diff, innermost frame first)"]
        for stat in snapshot.compare_to(self.baseline, "traceback")[:TOP]:
            lines.append(f"{stat.size_diff:+d} B {stat.count_diff:+d} blocks "
                         f"(now {stat.size} B in {stat.count})")
            lines += [f"    {frame.filename}:{frame.lineno}"
                      for frame in reversed(stat.traceback)]  # stored oldest first
        lines += ["", f"# top {TOP} object types grown since the baseline (count diff, now)"]
        grown = sorted(((n - self.baseline_types.get(t, 0), t, n) for t, n in types.items()),
                       reverse=True)
        lines += [f"{diff:+d} {name} ({now})" for diff, name, now in grown[:TOP] if diff > 0]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        text = self.report()
        partial = self.path.with_name(self.path.name + ".part")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(partial, self.path)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.write()


def install_from_env(prog: str) -> MemTrace | None:
    """Start the hook if ``PED_TRACEMALLOC`` (or ``PED_MEMSTATS``) is set: report on
    SIGUSR2 and at exit.  Call it in the main thread before the event loop starts."""
    traced = os.environ.get(ENV, "")
    raw = traced or os.environ.get(STATS_ENV, "")
    if not raw:
        return None
    trace = MemTrace(Path(raw.replace("{prog}", prog)), trace=bool(traced))
    signal.signal(signal.SIGUSR2, trace.on_signal)
    atexit.register(trace.write)
    return trace


def traced_bytes(path: Path) -> int | None:
    """The ``traced_bytes`` figure of a report file (None before the first report)."""
    try:
        first = path.read_text().split("\n", 1)[0]
    except FileNotFoundError:
        return None
    key, _, value = first.partition(" ")
    return int(value) if key == "traced_bytes" else None


def report_figures(path: Path) -> dict[str, int]:
    """Every ``NAME N`` line at the head of a report file (empty before the first)."""
    try:
        head = path.read_text().split("\n\n", 1)[0]
    except FileNotFoundError:
        return {}
    figures: dict[str, int] = {}
    for line in head.splitlines():
        key, _, value = line.partition(" ")
        if value.isdigit():
            figures[key] = int(value)
    return figures


def report_count(path: Path) -> int:
    """How many reports the file's writer has made (0 before the first)."""
    try:
        head = path.read_text().split("\n", 3)[:3]
    except FileNotFoundError:
        return 0
    for line in head:
        key, _, value = line.partition(" ")
        if key == "reports":
            return int(value)
    return 0
