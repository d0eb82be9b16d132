"""Memory upkeep (`ped.daemon.memkeep`): freed pages inside glibc's heap really go back to
the system, once per interval, for as long as the daemon runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from ped.daemon import memkeep
from ped.daemon.memstats import status_stats

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or memkeep.find_trim() is None,
    reason="malloc_trim is glibc's",
)


@glibc_only
def test_trim_returns_free_pages_in_the_middle_of_the_heap() -> None:
    trim = memkeep.find_trim()
    assert trim is not None
    trim()  # start from a trimmed heap
    # 16 MiB in 1 KiB chunks (under the mmap threshold: the heap), then one more kept at
    # the top, so that freeing the rest leaves a hole glibc itself never gives back.
    chunks = [bytearray(1024) for _ in range(16 * 1024)]
    for chunk in chunks:
        chunk[::512] = b"\x01\x01"  # touched: resident
    top = bytearray(1024)
    del chunks
    held = status_stats()["rss_anon"]
    assert trim() is True
    released = held - status_stats()["rss_anon"]
    assert released >= 8 << 20, f"malloc_trim gave back only {released} bytes"
    del top


async def test_upkeep_trims_once_per_interval(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[float] = []

    def trim() -> bool:
        calls.append(trio.current_time())
        return True

    with trio.move_on_after(10 * memkeep.INTERVAL + 1):
        await memkeep.keep_memory(trim=trim)
    assert len(calls) == 10
    assert calls == [pytest.approx(memkeep.INTERVAL * n) for n in range(1, 11)]


async def test_no_trim_in_this_c_library_means_no_upkeep(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setattr(memkeep, "find_trim", lambda: None)
    started = trio.current_time()
    await memkeep.keep_memory()  # returns at once: nothing to do, nothing waited for
    assert trio.current_time() == started


TUNED_CHILD = """
import sys
from ped.daemon.memkeep import tune_heap
from ped.daemon.memstats import glibc_stats
if sys.argv[1] == "tuned":
    assert tune_heap()
before = glibc_stats()
held = [bytearray(100 * 1024) for _ in range(200)]  # 20 MiB no free chunk can serve
after = glibc_stats()
print(*(after[key] - before[key] for key in ("malloc_heap", "malloc_mmapped")))
"""


@pytest.mark.process
@glibc_only
@pytest.mark.parametrize("how", ["tuned", "default"])
def test_big_buffers_get_mappings_of_their_own_not_the_heap(how: str) -> None:
    """In a fresh interpreter (the threshold is process-wide): 200 buffers of 100 KiB
    extend the heap by 20 MiB under glibc's default (128 KiB threshold), and leave it
    alone once `tune_heap` set 16 KiB."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", TUNED_CHILD, how], capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(root)}, check=True)
    heap, mapped = (int(word) for word in done.stdout.split())
    buffers = 200 * 100 * 1024
    if how == "tuned":
        assert mapped >= buffers and heap < 1 << 20, (heap, mapped)
    else:  # the heap's free chunks from start-up serve a few of them
        assert heap >= buffers - (1 << 20) and mapped < 1 << 20, (heap, mapped)
