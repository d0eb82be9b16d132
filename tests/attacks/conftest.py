from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.attacks.rig import Stack, running_stack
from tests.pedserver.fakes import short_tmp


@pytest.fixture
def home() -> Iterator[Path]:
    with short_tmp() as path:
        yield path


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """One set of daemons for a whole test module (each test ends with them serving)."""
    with short_tmp() as path, running_stack(path) as s:
        yield s


# The real pedhsm daemon with a local emulated PED (tests/hsm/test_daemon.py's fixture).
from tests.hsm.test_daemon import shell  # noqa: E402

__all__ = ["home", "shell", "stack"]
