"""`hsm ped vector init --remote`: its command line and the HSM's refusals (no processes)."""

from __future__ import annotations

import pytest

from hsm.control import remote_target
from hsm.errors import InvalidCommand
from hsm.shellparser import build_parser


def test_remote_needs_a_pedserver() -> None:
    with pytest.raises(InvalidCommand, match="--remote needs the pedserver"):
        remote_target({"remote": True, "port": 1503})


def test_ip_without_remote_is_refused() -> None:
    with pytest.raises(InvalidCommand, match="go with --remote"):
        remote_target({"remote": False, "ip": "10.0.0.1", "port": 1503})


def test_targets() -> None:
    assert remote_target({"port": 1503}) is None
    assert remote_target({"remote": True, "ip": "h", "port": 1600}) == ("h", 1600, None)
    assert remote_target({"remote": True, "peer": "ws1", "port": 1503}) == ("", 0, "ws1")


def test_parser_accepts_remote() -> None:
    ns = build_parser().parse_args(
        ["hsm", "ped", "vector", "init", "--remote", "--ip", "10.0.0.5"]
    )
    assert ns.remote and ns.ip == "10.0.0.5" and ns.port == 1503
