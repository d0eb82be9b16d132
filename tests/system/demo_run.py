"""Run `python -m pedtools.demo` as a process, as `make demo` does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import attrs

_ROOT = re.compile(r"^Scratch directory: DEMO=(\S+)", re.M)


@attrs.frozen
class DemoRun:
    code: int
    out: str
    err: str
    root: Path


def run_demo(*args: str, cwd: Path | None = None, timeout: float = 300) -> DemoRun:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PED", "PYTEST"))}
    done = subprocess.run(
        [sys.executable, "-m", "pedtools.demo", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    found = _ROOT.search(done.stdout)
    assert found, done.stdout + done.stderr
    return DemoRun(done.returncode, done.stdout, done.stderr, Path(found.group(1)))
