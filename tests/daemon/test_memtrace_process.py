"""The memory debug hook in the real daemons: started with PED_TRACEMALLOC, each writes its
report at SIGUSR2 (and the variable unset, none does)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from ped.daemon.memtrace import ENV, report_count
from pedtools.testing.procs import Site, free_port
from tests.pedserver.fakes import short_tmp

pytestmark = pytest.mark.process


def _wait_report(path: Path, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while report_count(path) < count:
        assert time.monotonic() < deadline, f"no report {count} in {path}"
        time.sleep(0.05)


def test_every_daemon_reports_on_sigusr2() -> None:
    # a short root: the daemons' socket paths must fit a Unix address (pytest-xdist's
    # temporary paths are long)
    with short_tmp() as root:
        _reports_on_sigusr2(root)


def _reports_on_sigusr2(tmp_path: Path) -> None:
    site = Site(tmp_path / "site")
    try:
        keys = tmp_path / "keys"
        site.run("pedkey", "blank", "--count", "2", "--dir", str(keys), check=True)
        site.env[ENV] = str(tmp_path / "mem-{prog}.txt")
        site.start("pedserver", site.home("pedserver"), "--ip", "127.0.0.1", "--port",
                   str(free_port()), "--device", f"emulated:{keys}?operator=auto")
        site.start("pedclient", site.home("pedclient"))
        site.start("pedhsm", site.home("pedhsm"), "--serial", "150001", "--local-ped",
                   f"emulated:{keys}?mode=local&operator=auto")
        del site.env[ENV]
        site.start("hsmclient", site.home("hsmclient"))  # not traced: no report
        pids = {d.name: d.pid for d in site.daemons}
        for name in ("pedserver", "pedclient", "pedhsm"):
            pid = pids[name]
            assert pid is not None
            os.kill(pid, signal.SIGUSR2)
            _wait_report(tmp_path / f"mem-{name}.txt", 1)
            os.kill(pid, signal.SIGUSR2)
            _wait_report(tmp_path / f"mem-{name}.txt", 2)
        assert not (tmp_path / "mem-hsmclient.txt").exists()
    finally:
        site.close()
