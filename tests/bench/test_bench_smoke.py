"""``python -m pedtools.bench --quick`` runs end to end and writes every figure (no timing
is asserted: only that the harness works and the JSON is complete and well typed)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

NUMBERS = [
    "login_p50_ms", "login_p99_ms", "relay_p50_ms", "login_ratio",
    "connect_p50_ms", "connect_baseline_p50_ms", "connect_ratio",
    "p2p_connect_p50_ms", "tls_baseline_p50_ms", "p2p_connect_ratio",
    "idle_link_kib", "pin_kdf_ms", "p2p_spare_connect_p50_ms",
    # p2p: tls_baseline is on the same hops; the one-hop figure and the spare's own
    # baseline are kept beside it.
    "tls_direct_p50_ms", "p2p_connect_direct_ratio", "p2p_spare_baseline_p50_ms",
    "p2p_spare_connect_ratio",
]


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_quick_bench_writes_every_figure(tmp_path):
    out, md = tmp_path / "bench-results.json", tmp_path / "bench.md"
    done = subprocess.run(
        [sys.executable, "-m", "pedtools.bench", "--quick", "--out", str(out), "--markdown",
         str(md)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    for key in NUMBERS:
        assert _positive(results[key]), (key, results[key])
    assert results["idle_links"] > 0
    cpu = results["cpu_ms_per_login_and_relay"]
    assert {"pedclient", "pedserver (PED)", "emulated PED", "echo device"} <= set(cpu)
    machine = results["machine"]
    assert isinstance(machine["cpu_count"], int) and machine["cpu_count"] >= 1
    for key in ("python", "trio", "cryptography"):
        assert isinstance(machine[key], str) and machine[key]
    throughput = results["throughput"]
    assert [t["k"] for t in throughput] == [1, 2]
    for row in throughput:
        assert row["errors"] == 0
        assert row["logins"] > 0
        assert _positive(row["logins_per_s"]) and _positive(row["p99_ms"])
    offered = results["offered"]
    assert offered["k"] == 2 and offered["offered_per_s"] > 0 and offered["errors"] == 0
    assert offered["logins"] > 0 and _positive(offered["p99_ms"])
    # The markdown table is what goes into the README: every figure is in it.
    table = md.read_text()
    assert "| login (read a blue key, p50) |" in table and "| 2 |" in table
    assert f"hops {results['tls_baseline_p50_ms']} ms |" in table
    assert f"| {results['tls_direct_p50_ms']} ms |" in table
    assert f"1 bounce {results['p2p_spare_baseline_p50_ms']} ms |" in table
    assert "tls_direct" in results["p2p_note"]
    assert done.stdout.strip().startswith("Machine:")
