from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pedserver.fakes import short_tmp


@pytest.fixture
def home() -> Iterator[Path]:
    with short_tmp() as path:
        yield path
