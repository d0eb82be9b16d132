"""Round trips per login and per connect over a long link, counted (issue 20, section 3).

A login waits for the far end once (its OP_BEGIN and sealed request go together), a
connect twice (the link hello, then OP_BEGIN with the HANDSHAKE_INIT); an HSM or a
pedserver that waits (link version 2) still works, at one round trip more each.  Counted
under trio's mock clock, in which only the delay proxy's crossings take time (see
`tests.link.rtt_rig`): no wall-clock timing is asserted.
"""

from __future__ import annotations

import functools
import hmac

import pytest
import trio

import pedclient.client
import pedserver.admission
from keys.colors import Color
from ped.hsm_api import open_ped_session
from ped.link import LinkHello
from ped.link.connection import negotiate_version
from tests.link.rtt_rig import Keys, Recorder, clock, long_link, make_keys, round_trips

__all__ = ["clock"]


@pytest.fixture
def keys(tmp_path) -> Keys:
    return make_keys(tmp_path / "keys")


async def connect_and_login(rig, *, pipelining: bool = True) -> tuple[float, float, Recorder]:
    """Mock seconds for a connect (link + RPV handshake) and for one login after it."""
    start = trio.current_time()
    transport = Recorder(await rig.connect(), pipelining=pipelining)
    async with open_ped_session(transport, rpv=rig.keys.rpv, hsm_serial="HSM-RTT") as ped:
        connected = trio.current_time()
        with await ped.read_secret(Color.BLUE) as result:
            logged_in = trio.current_time()
            assert hmac.compare_digest(bytes(result.secret), rig.keys.blue_secret)
        # A second login costs the same: nothing per link is paid again.
        with await ped.read_secret(Color.BLUE):
            assert trio.current_time() - logged_in == pytest.approx(logged_in - connected)
    await transport.aclose()
    return connected - start, logged_in - connected, transport


async def test_a_login_costs_one_round_trip_and_a_connect_two(clock, home, keys):
    async with long_link(home, keys) as rig:
        connect, login, transport = await connect_and_login(rig)
    assert transport.inner.result.version == 3
    assert (round_trips(connect), round_trips(login)) == (2, 1)
    # Each hold's first frame went with its OP_BEGIN: nothing was sent after a grant.
    assert all(len(hold) == 1 for hold in transport.holds)


async def test_without_the_proxy_nothing_takes_mock_time(clock, home, keys):
    """The count's premise: the daemons, the PED and the crypto take no mock time."""
    async with long_link(home, keys) as rig:
        start = trio.current_time()
        transport = await rig.connect(direct=True)
        async with open_ped_session(transport, rpv=keys.rpv, hsm_serial="HSM-RTT") as ped:
            with await ped.read_secret(Color.BLUE):
                pass
        await transport.aclose()
        assert trio.current_time() == start


async def test_an_hsm_that_waits_still_works_on_a_version_3_link(clock, home, keys):
    async with long_link(home, keys) as rig:
        connect, login, transport = await connect_and_login(rig, pipelining=False)
    assert transport.inner.pipelines and not transport.pipelines
    assert (round_trips(connect), round_trips(login)) == (3, 2)


async def test_a_version_2_pedserver_is_waited_for(clock, home, keys, monkeypatch):
    """An older pedserver (version 2 at most): the HSM learns it from CONNECT_RESULT
    and waits for each OP_GRANTED, as before."""
    monkeypatch.setattr(pedserver.admission, "negotiate_version",
                        functools.partial(negotiate_version, high=2))
    async with long_link(home, keys) as rig:
        connect, login, transport = await connect_and_login(rig)
    assert transport.inner.result.version == 2 and not transport.pipelines
    assert (round_trips(connect), round_trips(login)) == (3, 2)


async def test_a_version_2_pedclient_is_waited_for(clock, home, keys, monkeypatch):
    """An older pedclient (its hello offers up to version 2) with this pedserver: the
    link is version 2, and the HSM waits."""
    monkeypatch.setattr(pedclient.client, "LinkHello",
                        functools.partial(LinkHello, max_version=2))
    async with long_link(home, keys) as rig:
        connect, login, transport = await connect_and_login(rig)
    assert transport.inner.result.version == 2 and not transport.pipelines
    assert (round_trips(connect), round_trips(login)) == (3, 2)
