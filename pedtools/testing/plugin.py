"""The pytest fixtures of `pedtools.testing` (see its docstring); integrators load them
through their stable entry, ``pytest_plugins = ["ped.testing"]``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pedtools.testing.procs import Site, processes_naming
from pedtools.testing.remote import RemotePed, start_remote_ped


@pytest.fixture
def remote_ped_options() -> dict[str, str]:
    """Options of the emulated PED's ``emulated:`` URI (override to change them)."""
    return {}


@pytest.fixture
def remote_ped_pin_file() -> Path | None:
    """A PIN file for the auto operator (override to give one)."""
    return None


@pytest.fixture
def remote_ped(
    remote_ped_options: dict[str, str], remote_ped_pin_file: Path | None
) -> Iterator[RemotePed]:
    """A running remote PED: pedserver + emulated PED (auto operator) + pedclient."""
    # Not under tmp_path: a Unix socket path is at most 107 bytes, pytest's are long.
    site = Site(prefix="rped-")
    try:
        ped = start_remote_ped(
            site, pin_file=remote_ped_pin_file, device_options=remote_ped_options
        )
        yield ped
    finally:
        site.close()
    left = processes_naming(str(site.root))
    assert not left, f"processes of the remote PED still running: {left}"
