"""The memory debug hook (`ped.daemon.memtrace`): off by default; with PED_TRACEMALLOC a
report on SIGUSR2 names what grew since the first report, and the soak can read it."""

from __future__ import annotations

import atexit
import os
import signal
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from ped.daemon import memtrace


class Kept:
    """An object the collector tracks (a bytearray alone is not)."""

    def __init__(self) -> None:
        self.payload = bytearray(100)


KEPT: list[Kept] = []


@pytest.fixture
def restore() -> Iterator[None]:
    was_tracing = tracemalloc.is_tracing()
    handler = signal.getsignal(signal.SIGUSR2)
    yield
    signal.signal(signal.SIGUSR2, handler)
    KEPT.clear()
    if not was_tracing:
        tracemalloc.stop()


def _grow(n: int) -> None:
    KEPT.extend(Kept() for _ in range(n))  # the line the report must name


def test_off_unless_the_variable_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(memtrace.ENV, raising=False)
    assert memtrace.install_from_env("pedserver") is None
    monkeypatch.setenv(memtrace.ENV, "")
    assert memtrace.install_from_env("pedserver") is None


def test_report_names_what_grew_since_the_baseline(tmp_path: Path, restore: None) -> None:
    path = tmp_path / "report.txt"
    trace = memtrace.MemTrace(path, frames=3)
    assert memtrace.report_count(path) == 0 and memtrace.traced_bytes(path) is None
    trace.write()
    first = memtrace.traced_bytes(path)
    assert first is not None and memtrace.report_count(path) == 1
    _grow(2000)
    trace.write()
    text = path.read_text()
    assert memtrace.report_count(path) == 2
    now = memtrace.traced_bytes(path)
    assert now is not None and now - first >= 2000 * 100
    assert f"baseline_bytes {first}\n" in text
    # the biggest growth is named by its innermost frame first: this file's _grow
    sites = text.split("allocation sites", 1)[1]
    first_frame = sites.split("\n")[2].strip()
    assert first_frame.startswith(f"{__file__}:"), sites[:800]
    assert "+2000 Kept (2000)" in text.split("object types", 1)[1]
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_sigusr2_writes_the_report_named_for_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore: None
) -> None:
    monkeypatch.setenv(memtrace.ENV, str(tmp_path / "mem-{prog}.txt"))
    trace = memtrace.install_from_env("pedclient")
    assert trace is not None and tracemalloc.is_tracing()
    atexit.unregister(trace.write)  # not at pytest's exit
    path = tmp_path / "mem-pedclient.txt"
    os.kill(os.getpid(), signal.SIGUSR2)  # the handler runs before kill returns to us
    assert memtrace.report_count(path) == 1
    os.kill(os.getpid(), signal.SIGUSR2)
    assert memtrace.report_count(path) == 2
