"""pedhsm tells the truth after a command went away in the middle of a PED operation.

The shell that ran ``hsm login`` is killed while the PED waits for the blue key: the
command's task is cancelled, the session sends the PED a CANCEL and waits its cancel
grace for the PED to end the operation.  A PED that has hung never answers: the session
is broken from that moment, and ``hsm ped show`` must say so at once (not "Connected: no"
without a cause, nor at the next login): by whom, why, and `hsm ped connect` to open a
new session.  The real HSM and router against the HSM suite's PED double, as in
test_sealed_truth; trio's mock clock runs the 10 s cancel grace.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from hsm.errors import PedUnavailable
from pedtools.conform.faulty_ped import Fault, Record
from tests.hsm.test_sealed_truth import CONNECT, bed, secret_forms


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # Jump only once nothing has moved for a few real milliseconds: bytes on the Unix
    # sockets are seen before the clock jumps (as in tests/hsm/test_busy_link.py).
    return trio.testing.MockClock(autojump_threshold=0.01)


async def test_a_login_abandoned_on_a_hung_ped_is_a_lost_link_with_its_cause(
    clock: trio.testing.MockClock,
) -> None:
    async with bed() as b:
        await b.cmd("hsm.ped.connect", **CONNECT)
        await b.cmd("hsm.init", label="hung", force=False)
        await b.cmd("hsm.logout")
        secrets = secret_forms(b)
        left = await b.attempts_left()

        read_reached = trio.Event()

        def watch(record: Record) -> None:
            if record.kind == "read":
                read_reached.set()

        b.ped.wire.trace = watch
        b.ped.fault = Fault.HUNG
        mark = b.ped.wire.mark()
        started = trio.current_time()
        async with trio.open_nursery() as shell:
            shell.start_soon(b.cmd, "hsm.login")
            await read_reached.wait()
            shell.cancel_scope.cancel()  # the shell is killed while the PED waits
        b.ped.fault = Fault.NONE
        kinds = [r.kind for r in b.ped.wire.since(mark)]
        assert "cancel" in kinds, kinds  # the HSM told the PED; the PED never answered
        assert trio.current_time() - started >= 10  # it waited the whole cancel grace

        shown = await b.show()
        assert "Connected:          no" in shown, shown
        assert "closed by this HSM" in shown, shown
        assert "did not end an abandoned operation" in shown, shown
        assert "`hsm ped connect`" in shown, shown
        data = (await b.cmd("hsm.ped.show"))["data"]
        assert data["connected"] is False and data["lost"]["by"] == "this HSM", data
        assert await b.attempts_left() == left  # an abandoned login is not a failed one

        # the next login is refused at once with the cause and the fix: no READ_SECRET
        mark = b.ped.wire.mark()
        with pytest.raises(PedUnavailable) as refused:
            await b.cmd("hsm.login")
        text = str(refused.value)
        assert "abandoned operation" in text and "hsm ped connect --ip 127.0.0.1" in text, text
        assert not [r for r in b.ped.wire.since(mark) if r.kind == "read"]

        # connect opens a new session, on which a login succeeds
        assert "Remote PED connected" in (await b.cmd("hsm.ped.connect", **CONNECT))["text"]
        assert "HSM SO logged in" in (await b.cmd("hsm.login"))["text"]
        assert await b.attempts_left() == left

        audit = b.hsm.state.audit.path.read_text()
        assert '"by":"this HSM"' in audit and "abandoned operation" in audit, audit
        for said in [*b.said, *b.notes, audit]:
            assert not any(s in said for s in secrets), said


async def test_a_login_abandoned_on_a_ped_that_ends_it_keeps_the_link(
    clock: trio.testing.MockClock,
) -> None:
    """Only a PED that never ends the cancelled operation breaks the session: one that
    answers the CANCEL leaves it connected, and the next login runs on it."""
    async with bed() as b:
        await b.cmd("hsm.ped.connect", **CONNECT)
        await b.cmd("hsm.init", label="silent", force=False)
        await b.cmd("hsm.logout")
        read_reached = trio.Event()
        b.ped.wire.trace = lambda record: read_reached.set() if record.kind == "read" else None
        b.ped.fault = Fault.SILENT  # no answer until the HSM cancels
        handshakes = [r for r in b.ped.wire.records if r.kind == "handshake-init"]
        async with trio.open_nursery() as shell:
            shell.start_soon(b.cmd, "hsm.login")
            await read_reached.wait()
            shell.cancel_scope.cancel()
        b.ped.fault = Fault.NONE
        assert "Connected:          yes" in await b.show()
        assert "HSM SO logged in" in (await b.cmd("hsm.login"))["text"]
        assert [r for r in b.ped.wire.records if r.kind == "handshake-init"] == handshakes
