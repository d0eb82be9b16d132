from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from tests.hsm.emulated import Bench
from tests.hsm.rig import Rig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    r = Rig(home)
    yield r
    r.store.close()


@pytest.fixture
async def bench(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Bench]:
    b = Bench(tmp_path, nursery)
    yield b
    b.store.close()
