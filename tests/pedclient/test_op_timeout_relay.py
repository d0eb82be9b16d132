"""The HSM's operation timeout travels HSM -> pedclient -> pedserver on a version 2 link,
and not at all when pedserver speaks only version 1 (in process, real sockets)."""

from __future__ import annotations

import functools
import logging

import pedserver.admission
from ped.link import connect_via_pedclient
from ped.link.connection import negotiate_version
from tests.pedserver.fakes import running_pair


async def test_pedserver_bounds_the_hold_by_what_the_hsm_announced(home, caplog):
    caplog.set_level(logging.INFO, "pedserver")
    async with running_pair(home, server={"max_op_hold": 980}) as pair:
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port)
        assert ped.result.version >= 2  # version 2 brought the field
        ped.announce_op_timeout(60.2)
        await ped.begin_operation(wait=5)
        await ped.end_operation()
        await ped.aclose()
    assert "announces an operation timeout of 61 s; a hold of the PED ends after 91 s" \
        in caplog.text


async def test_a_version_1_pedserver_never_sees_the_field(home, caplog, monkeypatch):
    """An older pedserver would refuse the field: the HSM leaves it out."""
    monkeypatch.setattr(pedserver.admission, "negotiate_version",
                        functools.partial(negotiate_version, high=1))
    caplog.set_level(logging.INFO, "pedserver")
    async with running_pair(home) as pair:
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port)
        assert ped.result.version == 1
        ped.announce_op_timeout(60)
        await ped.begin_operation(wait=5)
        await ped.end_operation()
        await ped.aclose()
    assert "announces no operation timeout; a hold of the PED ends after max_op_hold" \
        in caplog.text
    assert "protocol error" not in caplog.text.lower()

