"""Where a process's resident memory sits, below Python: the kernel's, glibc's and pymalloc's view.

RSS alone cannot tell a leak from the allocators' high-water marks.  This module reads,
in the process itself and without tracing anything:

* the kernel's split of resident memory (``/proc/self/status``): ``RssAnon`` (heap,
  arenas, stacks: what a leak grows) and ``RssFile`` (pages of the interpreter, shared
  libraries and modules mapped from disk, touched the first time a code path runs);
* glibc's heap (``mallinfo2``, glibc 2.33 and later): bytes in use, bytes free inside
  the heap (fragmentation: kept by glibc, counted in RSS once touched), bytes in mmapped
  chunks, and what ``malloc_trim`` could give back at the top.  "In use" includes the
  chunks freed into glibc's per-thread cache (tcache: up to 7 of each size class up to
  1,032 bytes, kept for reuse and counted as used), so it swings by tens of kB with what
  was freed last: a leak shows in it only over many reports;
* pymalloc's arenas (``_PyObject_DebugMallocStats``, CPython): arenas held, bytes in
  allocated and in available blocks, unused pools (not while tracemalloc runs: it wraps
  pymalloc, which then declines to report);
* Python's live blocks (``sys.getallocatedblocks``, ``py_blocks``): how many blocks the
  interpreter holds, every object of every size.  A count, not bytes: where the byte
  figures swing by the size of what is in flight and by where the allocators place it,
  this one, read at a quiet point after a collection, moves by one for each object kept,
  so it can show a leak of a fraction of a byte per operation that no byte figure can.

Each figure is a count of bytes (or of arenas, or of blocks); a figure the platform
cannot give is left out, never guessed.  Nothing here reads or reports a value held in memory.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

#: ``/proc/self/status`` fields, kB, reported in bytes.
STATUS_FIELDS = {"VmRSS": "rss", "RssAnon": "rss_anon", "RssFile": "rss_file"}
#: ``mallinfo2`` members, in glibc's order.
MALLINFO2_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                    "uordblks", "fordblks", "keepcost")
#: pymalloc's report lines and the names they are reported under.
PYMALLOC_LINES = {
    "# arenas allocated current": "pymalloc_arenas",
    "# arenas highwater mark": "pymalloc_arenas_highwater",
    "# bytes in allocated blocks": "pymalloc_allocated",
    "# bytes in available blocks": "pymalloc_available",
}
UNUSED_POOLS = re.compile(r"^(\d+) unused pools \* (\d+) bytes")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2_FIELDS]


def status_stats(path: str = "/proc/self/status") -> dict[str, int]:
    """The kernel's resident-memory split, in bytes (empty where /proc is missing)."""
    stats: dict[str, int] = {}
    try:
        text = Path(path).read_text()
    except OSError:
        return stats
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in STATUS_FIELDS and rest.split():
            stats[STATUS_FIELDS[key]] = int(rest.split()[0]) * 1024
    return stats


@functools.cache
def _libc() -> Any:
    """The C library, loaded once per process (None where it cannot be): a report must
    not itself keep memory each time it runs, and each handle made new kept some."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc


@functools.cache
def _mallinfo2() -> Any:
    libc = _libc()
    mallinfo2 = getattr(libc, "mallinfo2", None) if libc is not None else None
    if mallinfo2 is not None:
        mallinfo2.restype = _MallInfo2
        mallinfo2.argtypes = []
    return mallinfo2


def glibc_stats() -> dict[str, int]:
    """glibc's heap figures (empty on another C library or an older glibc)."""
    mallinfo2 = _mallinfo2()
    if mallinfo2 is None:
        return {}
    info = mallinfo2()
    return {
        "malloc_heap": info.arena,          # bytes the heap has from the system (brk)
        "malloc_in_use": info.uordblks,     # of which in use
        "malloc_free": info.fordblks,       # of which free: fragmentation kept by glibc
        "malloc_trimmable": info.keepcost,  # free at the top: what malloc_trim returns
        "malloc_mmapped": info.hblkhd,      # large chunks, each its own mapping
    }


def parse_pymalloc(text: str) -> dict[str, int]:
    """The figures of one ``_PyObject_DebugMallocStats`` report."""
    stats: dict[str, int] = {}
    for line in text.splitlines():
        label, _, value = line.partition("=")
        label = label.strip()
        if label in PYMALLOC_LINES:
            stats[PYMALLOC_LINES[label]] = int(value.strip().replace(",", ""))
        elif match := UNUSED_POOLS.match(label):
            stats["pymalloc_unused_pools"] = int(match[1]) * int(match[2])
    return stats


@functools.cache
def _pymalloc_reporter() -> tuple[Any, Any, Any] | None:
    """CPython's report function and the C library's fdopen and fclose, typed once."""
    libc = _libc()
    report = getattr(ctypes.pythonapi, "_PyObject_DebugMallocStats", None)
    if libc is None or report is None:
        return None
    fdopen, fclose = libc.fdopen, libc.fclose
    report.argtypes, report.restype = [ctypes.c_void_p], ctypes.c_int
    fdopen.argtypes, fdopen.restype = [ctypes.c_int, ctypes.c_char_p], ctypes.c_void_p
    fclose.argtypes = [ctypes.c_void_p]
    return report, fdopen, fclose


def pymalloc_stats() -> dict[str, int]:
    """pymalloc's figures (empty when the interpreter cannot report them)."""
    reporter = _pymalloc_reporter()
    if reporter is None:
        return {}
    report, fdopen, fclose = reporter
    # The report is written through a C FILE: an unnamed temporary file, read back (made
    # for each report: a file kept open would be one more fd of the daemon's).
    with tempfile.TemporaryFile(mode="w+") as out:
        stream = fdopen(os.dup(out.fileno()), b"w")
        if not stream:
            return {}
        try:
            written = report(stream)
        finally:
            fclose(stream)  # flushes, closes the dup
        if not written:
            return {}  # another allocator than pymalloc (PYTHONMALLOC=malloc)
        out.seek(0)
        return parse_pymalloc(out.read())


def python_stats() -> dict[str, int]:
    """``py_blocks``: the blocks the interpreter holds (left out where it cannot count
    them: ``sys.getallocatedblocks`` returns 0 then)."""
    blocks = sys.getallocatedblocks()
    return {"py_blocks": blocks} if blocks > 0 else {}


def native_stats() -> dict[str, int]:
    """Every figure this platform gives, by name (see the module docstring)."""
    return {**status_stats(), **glibc_stats(), **pymalloc_stats(), **python_stats()}
