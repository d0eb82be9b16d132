"""pedclient's ``mode show`` during a route flap (issue 20, section 4).

The route between pedclient and pedserver holds the bytes (TCP stays alive): while the
HSM's request has not reached pedserver, pedclient says it waits for pedserver (not for
the PED), with how long ago pedserver was last heard from.
"""

from __future__ import annotations

import trio

from ped.link import connect_via_pedclient
from ped.wire.framing import Frame
from tests.pedserver.fakes import running_pair
from tests.pedserver.held_route import DOWN, UP, HeldRoute, wait_for_state

WAITING = "waiting for pedserver"
OPERATING = "PED operation in progress"


async def test_a_request_held_in_the_network_is_waiting_for_pedserver(home):
    async with running_pair(home) as pair, trio.open_nursery() as nursery:
        route = HeldRoute(pair.port)
        port = await route.start(nursery)
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", port, hsm_name="hsm-flap")
        # The HSM asks for the PED while the route holds: the OpBegin never arrives.
        route.hold(UP)
        async with trio.open_nursery() as asking:
            asking.start_soon(ped.begin_operation)
            await route.wait_for_waiting(UP)
            link = await wait_for_state(pair.client.show, lambda link: link["activity"] == WAITING)
            assert str(link["doing"]).startswith(f"{WAITING} (last heard from pedserver ")
            assert pair.server.show()["links"][0]["activity"] == "idle"  # it never got it
            route.release()
        await wait_for_state(pair.client.show, lambda link: link["activity"] == OPERATING)
        # The request of the operation is held too: pedclient waits for pedserver again.
        route.hold(UP)
        await ped.send(Frame(0x23, b"login"))
        await route.wait_for_waiting(UP)
        await wait_for_state(pair.client.show, lambda link: link["activity"] == WAITING)
        route.release()
        assert (await ped.receive()).payload == b"nigol"
        await wait_for_state(pair.client.show, lambda link: link["activity"] == OPERATING)
        await ped.end_operation()
        await wait_for_state(pair.client.show, lambda link: link["activity"] == "idle")
        await ped.aclose()
        nursery.cancel_scope.cancel()


async def test_show_says_how_long_ago_pedserver_was_heard_from(home):
    async with running_pair(home) as pair, trio.open_nursery() as nursery:
        route = HeldRoute(pair.port)
        port = await route.start(nursery)
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", port)
        await ped.begin_operation()
        route.hold(DOWN)  # pedserver's answer does not come back
        await ped.send(Frame(0x23, b"login"))
        await route.wait_for_waiting(DOWN)
        held = await wait_for_state(pair.client.show, lambda link: link["heard_ago"] >= 0.3)
        assert held["activity"] == WAITING  # no sign yet that pedserver has the request
        assert f"(last heard from pedserver {held['heard_ago']:.1f} s ago)" in str(held["doing"])
        route.release()
        assert (await ped.receive()).payload == b"nigol"
        link = await wait_for_state(pair.client.show, lambda link: link["activity"] == OPERATING)
        assert link["heard_ago"] < held["heard_ago"]
        await ped.aclose()
        nursery.cancel_scope.cancel()


async def test_a_keepalive_answer_shows_the_request_arrived(home):
    """The PED may stay silent for minutes (the operator): pedserver's answer to a
    keepalive sent after the request proves the request arrived (TCP keeps order)."""
    async with (
        running_pair(home, server={"keepalive_interval": 1}) as pair,
        trio.open_nursery() as nursery,
    ):
        route = HeldRoute(pair.port)
        port = await route.start(nursery)
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", port)
        await ped.begin_operation()
        pair.driver.hold_replies = True  # the PED waits for its operator: no frame back
        route.hold(UP)
        await ped.send(Frame(0x23, b"login"))
        await route.wait_for_waiting(UP)
        await wait_for_state(pair.client.show, lambda link: link["activity"] == WAITING)
        route.release()
        await wait_for_state(pair.client.show, lambda link: link["activity"] == OPERATING)
        assert len(pair.driver.device_in) == 1  # the request is at the (silent) PED
        await ped.aclose()
        nursery.cancel_scope.cancel()
