"""The bench's round-trip figure (`pedtools.bench.rtt`): its arithmetic, and a quick run
end to end (no timing asserted: that it runs and its JSON and table are complete)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pedtools.bench.rtt import figures, markdown

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[2]


def test_round_trips_are_the_p50_beyond_local_over_the_rtt():
    got = {
        "direct": {mode: {"login_ms": [10.0, 12.0, 11.0], "connect_ms": [30.0, 30.0, 30.0]}
                   for mode in ("pipelined", "waiting")},
        "100": {"pipelined": {"login_ms": [111.0, 112.0, 200.0], "connect_ms": [230.0] * 3},
                "waiting": {"login_ms": [211.0] * 3, "connect_ms": [330.0] * 3}},
    }
    rows = {(r["mode"], r["rtt_ms"]): r for r in figures(got, (100,))["rows"]}
    assert rows[("pipelined", 100)]["login_round_trips"] == 1.01
    assert rows[("pipelined", 100)]["connect_round_trips"] == 2.0
    assert rows[("waiting", 100)]["login_round_trips"] == 2.0
    assert rows[("waiting", 100)]["connect_round_trips"] == 3.0
    table = "\n".join(markdown({"rtt": figures(got, (100,))}))
    assert "| 100 ms | 1.01 (112.0 ms) | 2.0 (230.0 ms) | 2.0 (211.0 ms) | 3.0 (330.0 ms) |" \
        in table


def test_a_quick_run_writes_the_figure(tmp_path):
    out = tmp_path / "rtt.json"
    done = subprocess.run(
        [sys.executable, "-m", "pedtools.bench.rtt_alone", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {(r["mode"], r["rtt_ms"]) for r in result["rows"]} == {
        ("pipelined", 100), ("waiting", 100)}
    for row in result["rows"]:
        assert row["login_p50_ms"] > 0 and row["connect_p50_ms"] > 0
    assert "| 100 ms |" in done.stdout
