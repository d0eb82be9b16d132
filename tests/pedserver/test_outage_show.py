"""pedserver's ``mode show`` during a route flap (issue 20, section 4).

The route between pedclient and pedserver holds the bytes (TCP stays alive): once the
PED has answered, the operation waits for the link, not for the PED, and ``mode show``
says so, with how long ago pedclient was last heard from.
"""

from __future__ import annotations

import re

import trio

from ped.device import DeviceEvent, EventKind
from ped.link import connect_via_pedclient
from ped.wire.framing import Frame
from pedserver.cli import _describe
from pedserver.deadlines import OP_HOLD_GRACE
from tests.pedserver.fakes import FakeDriver, FakeSession, running_pair
from tests.pedserver.held_route import DOWN, HeldRoute, wait_for_state

ANSWERED = "answer sent, waiting for the link"


class FinishingSession(FakeSession):
    """Reports OP_FINISHED once the PED answered, as a PED does after each operation."""

    async def send(self, frame: Frame) -> None:
        await super().send(frame)
        answered = not self.driver.hold_replies and not frame.payload.startswith(b"HOLD")
        if answered and self.driver.on_event is not None:
            self.driver.on_event(DeviceEvent(self.id, EventKind.OP_FINISHED, 1, "ks-test", "ok"))


class FinishingDriver(FakeDriver):
    async def open_session(self) -> FakeSession:  # type: ignore[override]
        await trio.lowlevel.checkpoint()
        session = FinishingSession(self, next(self._ids))
        self.sessions[session.id] = session
        return session


async def test_an_answer_stuck_in_the_network_is_not_a_ped_operation_in_progress(home):
    async with running_pair(home, FinishingDriver()) as pair, trio.open_nursery() as nursery:
        route = HeldRoute(pair.port)
        port = await route.start(nursery)
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", port, hsm_name="hsm-flap")
        await ped.begin_operation()
        link = await wait_for_state(pair.server.show, lambda link: link["operations"] == 1)
        assert link["activity"] == "PED operation in progress"
        route.hold(DOWN)  # the route flaps: pedserver's bytes no longer reach pedclient
        await ped.send(Frame(0x23, b"login"))
        await route.wait_for_waiting(DOWN)  # the PED's answer is stuck in the network
        link = await wait_for_state(pair.server.show, lambda link: link["activity"] == ANSWERED)
        assert str(link["doing"]).startswith(f"{ANSWERED} (last heard from pedclient ")
        # Nothing comes from pedclient meanwhile: the time since it was heard grows.
        held = await wait_for_state(pair.server.show, lambda link: link["heard_ago"] >= 0.3)
        assert held["activity"] == ANSWERED
        route.release()
        assert (await ped.receive()).payload == b"nigol"
        await ped.end_operation()
        link = await wait_for_state(pair.server.show, lambda link: link["activity"] == "idle")
        assert link["heard_ago"] < held["heard_ago"]  # OpEnd was just heard
        await ped.aclose()
        nursery.cancel_scope.cancel()


async def test_a_new_request_in_the_same_hold_is_the_ped_s_again(home):
    async with running_pair(home, FinishingDriver()) as pair:
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port)
        await ped.begin_operation()
        await ped.send(Frame(0x23, b"one"))
        assert (await ped.receive()).payload == b"eno"
        await wait_for_state(pair.server.show, lambda link: link["activity"] == ANSWERED)
        pair.driver.hold_replies = True  # the PED now waits for its operator
        await ped.send(Frame(0x23, b"two"))
        await wait_for_state(
            pair.server.show, lambda link: link["activity"] == "PED operation in progress"
        )
        await ped.aclose()


async def test_show_says_how_long_a_link_holds_the_ped_and_its_bound(home):
    """While a link holds the PED, ``mode show`` says for how long and until when at the
    most (the link is closed at that bound): ``op_start_timeout`` until the hold's first
    frame, then the operation timeout the HSM announced plus the grace."""
    async with running_pair(home, FinishingDriver()) as pair:
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port)
        link = await wait_for_state(pair.server.show, lambda link: link["activity"] == "idle")
        assert link["held_for"] is None and link["hold_bound"] is None
        assert "holds the PED" not in str(link["doing"])
        ped.announce_op_timeout(40)
        await ped.begin_operation()
        start = pair.server.settings.op_start_timeout
        link = await wait_for_state(pair.server.show, lambda link: link["hold_bound"] == start)
        assert isinstance(link["held_for"], int) and link["held_for"] >= 0, link
        assert re.search(rf"holds the PED for \d+ s of at most {start} s\)$", str(link["doing"]))
        pair.driver.hold_replies = True  # the PED waits for its operator
        await ped.send(Frame(0x23, b"login"))
        bound = 40 + OP_HOLD_GRACE
        link = await wait_for_state(pair.server.show, lambda link: link["hold_bound"] == bound)
        assert f"of at most {bound} s" in str(link["doing"]), link
        lines = "\n".join(_describe(pair.server.status()))
        assert re.search(rf"holds the PED for \d+ s of at most {bound} s\), 1 operation", lines)
        await ped.aclose()
