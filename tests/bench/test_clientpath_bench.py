"""The client-path figure's harness: ``python -m pedtools.bench.clientpath --quick`` sets
up the real path, runs every mode for 1 and 8 sessions and writes every figure (no time
is asserted: only that each figure is there, positive, and in the table)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from pedtools.bench.clientpath import KS, MODES

ROOT = Path(__file__).resolve().parents[2]


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_quick_clientpath_figure(tmp_path: Path) -> None:
    out = tmp_path / "cp.json"
    done = subprocess.run(
        [sys.executable, "-m", "pedtools.bench.clientpath", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    cp = json.loads(out.read_text())["clientpath"]
    assert [row["k"] for row in cp["sessions"]] == list(KS)
    for row in cp["sessions"]:
        for mode in MODES:
            for figure in ("p50_ms", "p99_ms", "per_s"):
                assert _positive(row[f"{mode}_{figure}"]), (row["k"], mode, figure, row)
    for ratio in ("sign_over_local", "sign_over_bare", "sign_over_random"):
        assert _positive(cp[ratio]), (ratio, cp[ratio])
    table = done.stdout
    assert "| client path, K sessions |" in table
    assert f"| 8 | {cp['sessions'][1]['sign_p50_ms']} |" in table
    assert f"bare TLS round trip over the same hops: {cp['sign_over_bare']}" in table
