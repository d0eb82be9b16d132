"""Where memory sits below Python (`ped.daemon.memstats`), and the untraced hook
(``PED_MEMSTATS``) that reports it: each figure moves with what it claims to measure."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from ped.daemon import memstats, memtrace

PYMALLOC_REPORT = """\
Small block threshold = 512, in 32 size classes.

class   size   num pools   blocks in use  avail blocks
-----   ----   ---------   -------------  ------------
    0     16           1              81           940

# arenas allocated total           =                    9
# arenas reclaimed                 =                    2
# arenas highwater mark            =                    8
# arenas allocated current         =                    7
7 arenas * 1048576 bytes/arena     =            7,340,032

# bytes in allocated blocks        =            6,412,704
# bytes in available blocks        =              308,064
34 unused pools * 16384 bytes      =              557,056
# bytes lost to pool headers       =               10,272
"""


@pytest.fixture
def restore() -> Iterator[None]:
    was_tracing = tracemalloc.is_tracing()
    handler = signal.getsignal(signal.SIGUSR2)
    yield
    signal.signal(signal.SIGUSR2, handler)
    if not was_tracing:
        tracemalloc.stop()


def test_pymalloc_report_is_read_by_its_labels() -> None:
    assert memstats.parse_pymalloc(PYMALLOC_REPORT) == {
        "pymalloc_arenas_highwater": 8,
        "pymalloc_arenas": 7,
        "pymalloc_allocated": 6_412_704,
        "pymalloc_available": 308_064,
        "pymalloc_unused_pools": 34 * 16384,
    }
    assert memstats.parse_pymalloc("") == {}


def test_status_split_adds_up_to_rss(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tpedserver\nVmRSS:\t   44464 kB\nRssAnon:\t   24484 kB\n"
                      "RssFile:\t   19972 kB\nRssShmem:\t       8 kB\n")
    assert memstats.status_stats(str(status)) == {
        "rss": 44464 * 1024, "rss_anon": 24484 * 1024, "rss_file": 19972 * 1024}
    assert memstats.status_stats(str(tmp_path / "missing")) == {}
    here = memstats.status_stats()
    assert here["rss"] >= here["rss_anon"] + here["rss_file"] > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc: Linux")
def test_every_figure_is_there_and_moves_with_what_it_measures() -> None:
    before = memstats.native_stats()
    assert {"rss", "rss_anon", "rss_file", "malloc_in_use", "malloc_free", "malloc_heap",
            "malloc_mmapped", "pymalloc_arenas", "pymalloc_allocated", "py_blocks"} <= set(before)
    # 4 MiB in one block: glibc's, in a mapping of its own or (once glibc's dynamic mmap
    # threshold has risen in a long-lived process) in its heap ...
    big = bytearray(4 << 20)
    # ... and 50,000 small objects: pymalloc's blocks
    small = [object() for _ in range(50_000)]
    during = memstats.native_stats()

    def glibc_holds(figures: dict[str, int]) -> int:
        return figures["malloc_mmapped"] + figures["malloc_in_use"]

    assert glibc_holds(during) - glibc_holds(before) >= 4 << 20
    assert during["pymalloc_allocated"] - before["pymalloc_allocated"] >= 50_000 * 16
    # Python's live blocks: one per object kept (give or take what came and went)
    assert 49_000 <= during["py_blocks"] - before["py_blocks"] <= 51_000
    del big, small
    after = memstats.native_stats()
    assert glibc_holds(during) - glibc_holds(after) >= 4 << 20
    assert during["py_blocks"] - after["py_blocks"] >= 49_000


def test_memstats_hook_reports_without_tracing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore: None
) -> None:
    monkeypatch.delenv(memtrace.ENV, raising=False)
    monkeypatch.setenv(memtrace.STATS_ENV, str(tmp_path / "mem-{prog}.txt"))
    was_tracing = tracemalloc.is_tracing()
    hook = memtrace.install_from_env("pedserver")
    assert hook is not None and not hook.trace
    assert tracemalloc.is_tracing() == was_tracing  # nothing started
    atexit.unregister(hook.write)
    path = tmp_path / "mem-pedserver.txt"
    assert memtrace.report_figures(path) == {}
    os.kill(os.getpid(), signal.SIGUSR2)  # the handler runs before kill returns to us
    figures = memtrace.report_figures(path)
    assert figures["reports"] == 1 and figures["traced_bytes"] == 0
    assert figures["rss"] > 0 and figures["rss_anon"] > 0
    assert "allocation sites" not in path.read_text()
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_traced_report_carries_the_same_figures(tmp_path: Path, restore: None) -> None:
    path = tmp_path / "report.txt"
    memtrace.MemTrace(path, frames=2).write()
    figures = memtrace.report_figures(path)
    assert figures["traced_bytes"] > 0 and figures["rss"] > 0 and figures["malloc_in_use"] > 0
    # tracemalloc wraps pymalloc, which then declines to report: left out, not guessed
    assert "pymalloc_arenas" not in figures
    assert "allocation sites" in path.read_text()


@pytest.mark.process
def test_a_report_keeps_nothing_of_its_own() -> None:
    """The figures are read between rounds of a soak for hours: reading them must not
    itself keep memory (each pymalloc report once made a C library handle and its
    function types, and kept a few blocks of them).  A fresh process: in the test
    runner's, other tests' leftovers come and go meanwhile."""
    code = ("import gc, sys\nfrom ped.daemon import memstats\n"
            "for _ in range(200): memstats.native_stats()\n"
            "gc.collect(); before = sys.getallocatedblocks()\n"
            "for _ in range(1000): memstats.native_stats()\n"
            "gc.collect(); print(sys.getallocatedblocks() - before)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert int(done.stdout) < 100, done.stdout + done.stderr  # under 0.1 block per report


@pytest.mark.process
def test_a_report_leaves_no_fd_open() -> None:
    """The soak fails a daemon whose fds grew: the instrument must not be the cause, not
    even at its first report (a fresh process: nothing opened before)."""
    code = ("import os\nfrom ped.daemon import memstats\n"
            "before = len(os.listdir('/proc/self/fd'))\n"
            "memstats.native_stats(); memstats.native_stats()\n"
            "print(len(os.listdir('/proc/self/fd')) - before)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "0", done.stdout + done.stderr
