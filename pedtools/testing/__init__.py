"""Test kit: a real Remote PED (pedserver + emulated PED + pedclient) for HSM tests.

The pytest fixtures live in `pedtools.testing.plugin`; integrators load them through the
stable entry ``ped.testing``, in a root ``conftest.py``::

    pytest_plugins = ["ped.testing"]

    async def test_my_hsm_reads_the_so_key(remote_ped):
        async with remote_ped.session(hsm_serial="123456") as ped:
            result = await ped.read_secret(Color.BLUE)

Fixtures:

* ``remote_ped``: pedserver (on 127.0.0.1, a free port) with an emulated PED worked by
  the auto operator, and pedclient, all real processes in a scratch directory under
  ``$TMPDIR``; a
  `RemotePed` (pedclient's socket, host/port, keyring, ``rpv()``, ``connect()``,
  ``session()``).  Stopped, and checked gone, after the test.
* ``remote_ped_options``: override it to change the emulated PED's options (a dict of
  ``emulated:`` URI options, e.g. ``{"m": "2", "n": "3"}``).
* ``remote_ped_pin_file``: override it to give the auto operator a PIN file (a `Path`).

Here, importable without pytest (the demo uses them): `RemotePed` and
`start_remote_ped`; `wait_for_log` waits for a daemon's log line (pedserver writes a PED
event's line just after relaying the answer that came with it); `Site`
(`pedtools.testing.procs`) runs any of the programs (``pedserver``, ``pedclient``,
``pedhsm``, ``pedkey``) as processes in a scratch directory and cleans up after them.

Modules of their own: `pedtools.testing.tap` (byte taps: proxies recording every byte),
`pedtools.testing.secret_scan` (every secret a keyring stands for, searched for in
recorded bytes) and `pedtools.testing.watched_ped` (an emulated PED whose screens are
written to a file).
"""

from __future__ import annotations

from pedtools.testing.logs import wait_for_log
from pedtools.testing.procs import Result, Site, SiteError, free_port, processes_naming, program
from pedtools.testing.remote import ORANGE_LABEL, RemotePed, make_keyring, start_remote_ped

__all__ = [
    "ORANGE_LABEL",
    "RemotePed",
    "Result",
    "Site",
    "SiteError",
    "free_port",
    "make_keyring",
    "processes_naming",
    "program",
    "start_remote_ped",
    "wait_for_log",
]
