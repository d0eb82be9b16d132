from __future__ import annotations

from pathlib import Path

import pytest

from tests.hsm.rig import Rig


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    r = Rig(home)
    yield r
    r.store.close()
