"""`make demo` as a test: the whole flow through real processes, and nothing left behind."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pedtools.demo.flow as flow
from pedtools.testing import processes_naming
from tests.system.demo_run import run_demo

KEY_LINES = [
    "$ pedkey blank --count 16 --dir $DEMO/keyring",
    "Remote PED Vector set in the HSM and on the orange PED key(s).",
    "PED operation required to connect to Remote PED - use orange PED Key(s).",
    "Remote PED connected (127.0.0.1:",
    "$ pedhsm hsm init --label demo-hsm",
    "HSM 150001 initialised with label 'demo-hsm'.",
    "HSM SO logged in.",
    "Partition 'demo' initialised.",
    "Crypto Officer of partition 'demo' initialised.",
    "Crypto Officer of partition 'demo' activated.",
    "HSM SO login failed (wrong PED key secret or PED PIN); 1 consecutive failure(s) of 3",
    "SO login attempts left: 2",
    "SO login attempts left: 3",
    "chain intact",
    "Remote PED disconnected.",
    "16 image(s): 16 imprinted, 0 blank, 0 damaged",
    "== Summary",
    "Every daemon stopped; scratch directory removed. Demo OK.",
]


def test_the_demo_runs_from_anywhere_and_leaves_nothing_behind(tmp_path: Path) -> None:
    run = run_demo(cwd=tmp_path)  # not from the repo: nothing depends on the cwd
    assert run.code == 0, run.out + run.err
    for line in KEY_LINES:
        assert line in run.out, line
    # every command is shown with its timing, and the blue/red keys are 2 of 3 with a PIN
    assert len(re.findall(r"^    \(\d+\.\d\d s", run.out, re.M)) >= 35
    assert re.search(r"blue +HSM SO .* 1 of 3 \(2 needed\) +yes", run.out)
    assert re.search(r"red +HSM cloning domain .* 3 of 3 \(2 needed\) +yes", run.out)
    assert re.search(r"black +Crypto Officer demo .* 2 of 3", run.out)
    # the activated CO logs in without the PED
    activated = run.out.split("$ pedhsm role logout --partition demo\n")[-1]
    login = activated.split("$ pedhsm object list")[0]
    assert "logged in" in login and "Please attend" not in login
    assert run.err == ""
    assert not run.root.exists()
    assert not processes_naming(str(run.root))


def test_a_failing_step_prints_its_output_and_still_cleans_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(flow, "HSM_LABEL", "x" * 200)  # pedhsm refuses such a label
    out = io.StringIO()
    code = flow.run_demo(out)
    text = out.getvalue()
    root = Path(re.search(r"DEMO=(\S+)", text).group(1))  # type: ignore[union-attr]
    assert code == 1
    assert "$ pedhsm hsm init --label xxxx" in text
    assert "DEMO FAILED: hsm init: `pedhsm hsm init --label" in text
    assert "exited with status 1 (expected 0)" in text
    assert "--- last lines of $DEMO/home-pedserver/pedserver.log" in text
    assert "Demo OK" not in text
    assert not root.exists()
    assert not processes_naming(str(root))


def test_sigterm_mid_run_stops_everything() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pedtools.demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("== 6."):  # daemons up and the link connected
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stdout.read()
    code = proc.wait(timeout=120)
    text = "".join(lines) + rest
    root = Path(re.search(r"DEMO=(\S+)", text).group(1))  # type: ignore[union-attr]
    assert code == flow.EXIT_INTERRUPTED, text
    assert "Interrupted: stopping the daemons and removing the scratch directory." in text
    deadline = time.monotonic() + 5  # nothing to wait for in practice; bounded anyway
    while processes_naming(str(root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_naming(str(root))
    assert not root.exists()
