"""Starting and stopping the bench's processes: pedserver, pedclient, echo device, HSM side.

Every actor is its own process, started by module name (as in production, never imported),
with its soft file-descriptor limit raised first (1,000 links and 256 PEDs need more
than the usual 1,024).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ped.daemon.control import control_request_sync
from pedtools.bench.limits import raise_fd_limit

#: The soft fd limit the bench asks for, for itself and every process it starts.
FD_LIMIT = 8192
START_TIMEOUT = 600.0


def _raise_limit() -> None:  # runs in the child, before exec
    raise_fd_limit(FD_LIMIT)


def spawn(argv: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=_raise_limit, **kwargs,
        )


def wait_for(path: Path, proc: subprocess.Popen[bytes], what: str,
             timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before it was up")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout:g} s")
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Daemon:
    """A pedserver or pedclient in the foreground, in its own home."""

    def __init__(self, program: str, home: Path, config: dict[str, Any],
                 extra: list[str]) -> None:
        self.program = program
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items())
        )
        self.proc = spawn(
            ["-m", program, "mode", "start", "--foreground", "--home", str(home), *extra],
            home / f"{program}.out",
        )
        self.control = home / "control.sock"

    def wait_ready(self) -> dict[str, Any]:
        wait_for(self.control, self.proc, self.program)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                return control_request_sync(self.control, "show", timeout=60.0)
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop(self.proc)


def rss_kib(pid: int) -> int:
    """Resident memory of *pid* in KiB (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def rss_split_kib(pid: int) -> tuple[int, int]:
    """(RssAnon, RssFile) of *pid* in KiB: the anonymous and the file-backed part of VmRSS."""
    found = {"RssAnon:": 0, "RssFile:": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in found:
            found[words[0]] = int(words[1])
    return found["RssAnon:"], found["RssFile:"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time *pid* has used so far (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """Direct children of *pid* (the emulated PEDs a pedserver started)."""
    kids: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                kids.append(int(entry.name))
    return kids


def run_client(job: dict[str, Any], work: Path, name: str,
               timeout: float = 1800.0) -> dict[str, Any]:
    """Run one HSM-side job (`pedtools.bench.client`) to the end; its result."""
    path = work / f"job-{name}.json"
    path.write_text(json.dumps(job))
    done = subprocess.run(
        [sys.executable, "-m", "pedtools.bench.client", str(path)],
        capture_output=True, text=True, timeout=timeout, preexec_fn=_raise_limit,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench client ({name}) failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])["result"]
    return result
