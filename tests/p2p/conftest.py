"""Fixtures of the peer-to-peer tests: `rig` (two homes, daemons stopped at the end)."""

from tests.p2p.rig import rig  # noqa: F401
