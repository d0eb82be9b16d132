"""The stable entry of the HSM test fixtures: ``pytest_plugins = ["ped.testing"]``.

The fixtures themselves live in `pedtools.testing.plugin` (they start pedserver and
pedclient as processes, so they stay out of the protocol core); integrators' conftests
name this path, which stays put wherever the kit moves.  This module only re-exports the
three fixtures: it is the one module of ``ped`` allowed to import ``pedtools`` (named in
the import contract in pyproject.toml; tests/arch checks it imports nothing else).  The
helpers (`RemotePed`, `wait_for_log`, `Site`) are imported from `pedtools.testing`.
"""

from __future__ import annotations

from pedtools.testing.plugin import remote_ped, remote_ped_options, remote_ped_pin_file

__all__ = ["remote_ped", "remote_ped_options", "remote_ped_pin_file"]
