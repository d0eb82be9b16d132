"""After a route flap outlasted the daemons, the HSM advises reconnecting (issue 20 §4).

pedclient gives up on a pedserver it no longer hears from (bytes held, TCP alive) and
closes the HSM's link: the link is gone, so the HSM's error says to run
``hsm ped connect``, not to retry the command.
"""

from __future__ import annotations

import pytest
import trio

from hsm.apiport import PedLinkLost, map_error
from ped.link import LinkClosed, connect_via_pedclient
from ped.wire.framing import Frame
from ped.wire.types import CloseCode
from tests.pedserver.fakes import running_pair, short_tmp
from tests.pedserver.held_route import HeldRoute


async def test_a_link_the_daemons_gave_up_on_is_reconnected_not_retried() -> None:
    with short_tmp() as home:
        async with (
            running_pair(home, client={"socket_read_rsp_timeout": 1}) as pair,
            trio.open_nursery() as nursery,
        ):
            route = HeldRoute(pair.port)
            port = await route.start(nursery)
            ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", port, hsm_name="hsm")
            await ped.begin_operation()
            route.hold()  # the route flaps in the middle of a login
            await ped.send(Frame(0x23, b"login"))
            with pytest.raises(LinkClosed) as closed:
                await ped.receive()  # pedclient stops waiting for pedserver
            assert closed.value.code is CloseCode.PEER_UNRESPONSIVE
            nursery.cancel_scope.cancel()
    error = map_error(closed.value, f"remote PED 127.0.0.1:{port}")
    assert isinstance(error, PedLinkLost)
    text = str(error)
    assert "reconnect with `hsm ped connect`" in text and "not counted" in text
    assert "retry" not in text, text
    assert "stopped answering" in text  # what happened stays in the message
