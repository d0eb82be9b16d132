"""The backup/restore figure's harness: ``python -m pedtools.bench.backup --quick`` sets up
a source pedhsm, a Backup HSM and hsmclient as processes, backs up and restores, and
writes every figure (no time is asserted: only that each figure is there and positive)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.process


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_quick_backup_figure(tmp_path: Path) -> None:
    out = tmp_path / "backup.json"
    done = subprocess.run(
        [sys.executable, "-m", "pedtools.bench.backup", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figure = json.loads(out.read_text())["backup"]
    assert figure["objects"] == 20 and figure["rounds"] == 1
    for key in ("backup_objects_per_s", "restore_objects_per_s", "backup_s_median",
                "restore_s_median"):
        assert _positive(figure[key]), (key, figure)
    assert f"backup {figure['backup_objects_per_s']} objects/s" in done.stdout
