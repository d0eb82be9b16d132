"""Test tiers: marks every test that starts whole processes (daemons, CLIs, pedemu) `process`.

`make test-fast` runs ``-m "not slow and not process"``: the in-memory tests, for the inner
loop.  `make test` runs both tiers on every CPU.  The mark is given per module (a module's
fixtures are shared by its tests) from the lists below, which were taken by recording every
process a test started; a module that starts processes from now on belongs here too (or
marks itself with ``pytestmark = pytest.mark.process``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

#: Directories whose every test starts processes.
PROCESS_DIRS = ("bench", "crash", "netns", "readme", "system")

#: Modules elsewhere that start processes (from their tests or their fixtures).
PROCESS_MODULES = frozenset({
    "arch/test_import_contracts.py",
    "attacks/test_challenge_lockout.py",
    "attacks/test_keys_hsm.py",
    "attacks/test_raw_peers.py",
    "attacks/test_relay_daemons.py",
    "attacks/test_relay_hsm.py",
    "attacks/test_resources.py",
    "daemon/test_logs_files.py",
    "daemon/test_operations.py",
    "daemon/test_process.py",
    "daemon/test_systemd_units.py",
    "hsm/test_daemon.py",
    "hsm/test_remote_e2e.py",
    "keys/test_atomic.py",
    "keys/test_cli.py",
    "keys/test_lock.py",
    "p2p/test_pedhsm_peer.py",
    "p2p/test_peer_link.py",
    "p2p/test_refusals.py",
    "p2p/test_registration.py",
    "p2p/test_secrets_tap.py",
    "ped/device/test_driver.py",
    "ped/device/test_emulated_driver.py",
    "ped/device/test_pedemu_process.py",
    "pedclient/test_behaviour.py",
    "pedclient/test_cli.py",
    "pedserver/test_cli.py",
    "pedserver/test_processes.py",
    "pedserver/test_secrets_tap.py",
    "ped/test_integrator_example.py",
})


def _starts_processes(path: Path) -> bool:
    try:
        relative = path.resolve().relative_to(TESTS).as_posix()
    except ValueError:  # a test outside this directory (e.g. a pytester project)
        return False
    return relative.split("/", 1)[0] in PROCESS_DIRS or relative in PROCESS_MODULES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _starts_processes(item.path):
            item.add_marker(pytest.mark.process)


@pytest.fixture(autouse=True)
def _processes_only_where_marked(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep the lists above true: a test outside them that starts a process fails.

    (A process started by a module- or session-scoped fixture is set up before this check;
    such a module starts processes in its tests too, in practice, and is caught there.)
    """
    if request.node.get_closest_marker("process") is not None:
        return

    def refuse(self: subprocess.Popen[bytes], *args: object, **kwargs: object) -> None:
        raise AssertionError(
            f"{request.node.nodeid} starts a process but is not marked 'process': add its "
            "module to PROCESS_MODULES in tests/conftest.py (or mark it)"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
