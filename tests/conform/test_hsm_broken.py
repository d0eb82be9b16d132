"""`pedconform hsm` against an HSM side built on ped.hsm_api (`pedtools.conform.hsm_double`),
connected straight to the suite's local endpoint: the correct one passes every case, the silent
PED's included; one broken on purpose fails exactly the cases its fault touches."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pedtools.testing import make_keyring

pytestmark = pytest.mark.process


def run_suite(tmp_path: Path, *extra: str, breaks: tuple[str, ...] = ()) -> tuple[int, dict]:
    keyring = tmp_path / "keyring"
    make_keyring(keyring, blanks=1)
    sock = tmp_path / "ped.sock"
    hsm = [sys.executable, "-m", "pedtools.conform.hsm_double", "--state", str(tmp_path / "hsm"),
           "--keyring", str(keyring), "--pedclient", str(sock), "--op-timeout", "3"]
    for name in breaks:
        hsm += ["--break", name]
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pedtools.conform.hsm_suite", "--pedclient", str(sock),
         "--keyring", str(keyring), "--hsm-cmd", f"{shlex.join(hsm)} {{step}}",
         "--counter-pattern", r"failed logins: (\d+)", "--slow-limit", "5",
         "--connected-pattern", "connected: yes",
         "--report", str(report), *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )
    assert report.exists(), done.stdout + done.stderr
    return done.returncode, json.loads(report.read_text())


def test_a_correct_hsm_side_passes_every_case(tmp_path: Path) -> None:
    code, report = run_suite(tmp_path)
    outcomes = {c["case"]: c["outcome"] for c in report["cases"]}
    assert code == 0 and report["passed"] is True, report
    assert set(outcomes.values()) == {"PASS"} and len(outcomes) == 14, outcomes
    silent = next(c for c in report["cases"] if c["case"] == "3.8")
    assert "CANCEL sent" in silent["seen"]
    seen = {c["case"]: c["seen"] for c in report["cases"]}
    assert "show-link: connected" in seen["1.1"]
    for case in ("3.1", "3.2", "4.1"):
        assert "show-link: not connected" in seen[case], seen[case]


def test_counting_a_wrong_colour_fails_case_3_3(tmp_path: Path) -> None:
    code, report = run_suite(
        tmp_path, "--cases", "3.3", "3.4", breaks=("count-wrong-colour",)
    )
    failed = {c["case"]: c["seen"] for c in report["cases"] if c["outcome"] != "PASS"}
    assert code == 1 and report["passed"] is False
    assert list(failed) == ["3.3"], report["cases"]
    assert "counter 0 -> 1 (counted)" in failed["3.3"]


def test_counting_channel_and_link_failures_fails_their_cases(tmp_path: Path) -> None:
    code, report = run_suite(
        tmp_path, "--cases", "3.1", "3.2", "3.3", "4.1", breaks=("count-channel",)
    )
    failed = sorted(c["case"] for c in report["cases"] if c["outcome"] != "PASS")
    assert code == 1
    assert failed == ["3.1", "3.2", "4.1"], report["cases"]


def test_saying_connected_after_the_session_broke_fails_its_cases(tmp_path: Path) -> None:
    code, report = run_suite(
        tmp_path, "--cases", "3.1", "3.2", "3.3", "4.1", breaks=("show-stale",)
    )
    failed = {c["case"]: c["seen"] for c in report["cases"] if c["outcome"] != "PASS"}
    assert code == 1 and report["passed"] is False
    assert sorted(failed) == ["3.1", "3.2", "4.1"], report["cases"]
    assert "show-link still says connected after its session broke" in failed["3.2"]
    assert "show-link still says connected after its link was cut" in failed["4.1"]
