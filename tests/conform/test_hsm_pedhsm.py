"""`pedconform hsm` against pedhsm, the project's HSM, through a real pedclient: every required
case passes, and the report says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from keys import Color, Keyring
from pedtools.testing import Site
from tests.pedserver.fakes import short_tmp

pytestmark = pytest.mark.process


def test_pedhsm_passes_the_hsm_suite(tmp_path: Path) -> None:
    # a short root: pedclient's socket path must fit a Unix address (pytest-xdist's
    # temporary paths are long)
    with short_tmp() as root, Site(root / "site") as site:
        keyring = site.root / "keyring"  # not "keys": the site's root must not shadow a package
        keyring.mkdir()
        Keyring(keyring).add_blanks(4)
        client = site.home("pedclient")
        site.start("pedclient", client)
        home = site.home("pedhsm")
        site.start(
            "pedhsm", home, "--serial", "880001",
            "--local-ped", f"emulated:{keyring}?mode=local&operator=auto",
            "--pedclient", str(client / "pedclient.sock"),
        )
        # the HSM's RPV goes on an orange key in the keyring the suite's PED reads
        site.run("pedhsm", "--home", str(home), "hsm", "ped", "vector", "init", check=True)
        assert Keyring(keyring).keys(color=Color.ORANGE)
        pedhsm = Path(sys.executable).with_name("pedhsm")
        report = tmp_path / "report.json"
        done = subprocess.run(
            [sys.executable, "-m", "pedtools.conform.hsm_suite",
             "--listen", "127.0.0.1:0", "--keyring", str(keyring),
             "--hsm-cmd", f"{pedhsm} --home {home} {{command}}",
             "--slow-limit", "2", "--report", str(report)],
            cwd=site.root, capture_output=True, text=True, timeout=600, check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pedconform hsm PASSED" in done.stdout
    got = json.loads(report.read_text())
    assert got["suite"] == "hsm" and got["passed"] is True
    outcomes = {c["case"]: c["outcome"] for c in got["cases"]}
    assert outcomes.pop("3.8") == "SKIP"  # pedhsm's pedo is at least 920 s: over the limit
    assert set(outcomes.values()) == {"PASS"}, got["cases"]
    assert len(outcomes) == 13
    by_case = {c["case"]: c["seen"] for c in got["cases"]}
    assert "counter 3 -> 2 (counted)" in by_case["3.4"]
    assert "counter 3 -> 3 (not counted)" in by_case["3.3"]
    # pedhsm's `hsm ped show` tells the truth: connected after 1.1, not after its session
    # broke (3.1, 3.2: it ends the link at once) or its link was cut (4.1)
    assert "show-link: connected" in by_case["1.1"]
    for case in ("3.1", "3.2", "4.1"):
        assert "show-link: not connected" in by_case[case], by_case[case]
