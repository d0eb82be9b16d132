from collections.abc import Iterator
from pathlib import Path

import pytest

from hsm import cli
from hsm.clock import TEST_CLOCK_ENV
from tests.hsm.test_daemon import Shell


@pytest.fixture
def shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Shell]:
    s = Shell(tmp_path, capsys)
    monkeypatch.setenv(TEST_CLOCK_ENV, str(s.clock))
    monkeypatch.delenv("PEDHSM_HOME", raising=False)
    yield s
    if (s.home / "pedhsm.pid").exists():
        cli.main(["--home", str(s.home), "mode", "stop"])
