"""pedclient's behaviour through its public surfaces only: a real pedclient process, its
local endpoint (what an HSM talks to), its control socket and CLI, and its log lines.

pedserver runs in this process (`running_pair`'s, with the fake PED) when a test needs
to steer it, or as a real process (`tests.p2p.rig`) for peer-to-peer mode.  Every wait
is for an event (a frame, a log line, a state), bounded by a timeout.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from ped.daemon.control import ControlError, control_request_sync
from ped.link import (
    CloseCode,
    ConnectCode,
    ConnectFailed,
    ConnectRequest,
    ConnectResult,
    LinkClosed,
    connect_via_pedclient,
)
from ped.link.messages import decode, encode
from ped.tls import load_identity
from ped.wire.framing import NEED_DATA, Frame, FrameDecoder, encode_frame
from tests.p2p.rig import (
    APPLIANCE,
    P2P,
    PEER,
    await_until,
    ok,
    peer_state,
    rig,  # noqa: F401 (the peer-to-peer fixture, used by name)
)
from tests.pedserver.fakes import running_pair, short_tmp

WAIT = 30.0  # the bound of every wait for an event


@pytest.fixture(scope="module")
def pedclient() -> Iterator[P2P]:
    """One real pedclient (standard mode, debug log, 1 s for a connect request) shared by
    the tests that do not stop it; each test names its HSM so its log lines are its own."""
    with short_tmp() as root:
        daemons = P2P(root)
        daemons.client_home.mkdir(mode=0o700)
        ok(daemons.client("mode", "config", "--set", "request_timeout", "1"))
        ok(daemons.client("mode", "start", "--log-level", "debug"))
        daemons.started.append(("pedclient", daemons.client_home, ()))
        try:
            yield daemons
        finally:
            daemons.stop_all()


def _endpoint(daemons: P2P) -> Path:
    return daemons.client_home / "pedclient.sock"


async def _control(daemons: P2P, command: str) -> dict[str, Any]:
    request = functools.partial(control_request_sync, daemons.client_home / "control.sock",
                                command, timeout=WAIT, what="pedclient")
    return await trio.to_thread.run_sync(request)


def _links_sync(daemons: P2P, hsm: str) -> list[dict[str, Any]]:
    shown = control_request_sync(daemons.client_home / "control.sock", "show", timeout=WAIT)
    return [link for link in shown["links"] if link["hsm"] == hsm]


async def _links_of(daemons: P2P, hsm: str) -> list[dict[str, Any]]:
    return await trio.to_thread.run_sync(_links_sync, daemons, hsm)


async def _logged(daemons: P2P, pattern: str) -> str:
    """The first line of pedclient's log matching *pattern*, once it is written."""
    found: list[str] = []

    def seen() -> bool:
        found[:] = [line for line in daemons.client_log().splitlines() if re.search(pattern, line)]
        return bool(found)

    await await_until(seen, f"pedclient logs {pattern!r}", timeout=WAIT)
    return found[0]


async def _closed(ped: Any) -> LinkClosed:
    """Wait for the link's end as the HSM sees it."""
    with trio.fail_after(WAIT), pytest.raises(LinkClosed) as closed:
        while True:
            await ped.receive()
    return closed.value


async def _free_port() -> int:
    probe = trio.socket.socket()
    await probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


# ---------------------------------------------------------------------- close reasons


async def test_pedserver_stopping_reaches_the_hsm_with_its_reason(pedclient, home):
    async with running_pair(home) as pair:
        ped = await connect_via_pedclient(_endpoint(pedclient), "127.0.0.1", pair.port,
                                          hsm_name="hsm-srvstop")
        pair.server.request_stop("mode stop")
        closed = await _closed(ped)
    assert closed.code is CloseCode.SHUTTING_DOWN and closed.retriable
    line = await _logged(pedclient, rf"\(HSM hsm-srvstop -> 127\.0\.0\.1:{pair.port}\) closed")
    assert "closed: pedserver closed it: the daemon at the other end is stopping" in line
    assert await _links_of(pedclient, "hsm-srvstop") == []


async def test_idle_timeout_of_pedserver_reaches_the_hsm(pedclient, home):
    async with running_pair(home, server={"idle_timeout": 1}) as pair:
        ped = await connect_via_pedclient(_endpoint(pedclient), "127.0.0.1", pair.port,
                                          hsm_name="hsm-idle")
        assert ped.result.idle_timeout == 1  # the shorter end wins
        closed = await _closed(ped)
        assert closed.code is CloseCode.IDLE_TIMEOUT and closed.retriable
        assert "idle too long" in str(closed)
    line = await _logged(pedclient, r"\(HSM hsm-idle -> .*\) closed")
    assert "pedserver closed it: the link was idle too long" in line
    assert line.endswith("; 0 operation(s)")


async def _use_then_close(daemons: P2P, port: int, name: str) -> None:
    """An HSM connects, runs one operation (checking `mode show` meanwhile), closes."""
    ped = await connect_via_pedclient(_endpoint(daemons), "127.0.0.1", port, hsm_name=name)
    (link,) = await _links_of(daemons, name)
    assert link["target"] == f"127.0.0.1:{port}" and link["activity"] == "idle"
    await ped.begin_operation()
    assert (await _links_of(daemons, name))[0]["activity"] == "PED operation in progress"
    shown = await trio.to_thread.run_sync(lambda: ok(daemons.client("mode", "show")))
    assert re.search(rf"link \d+: HSM {name} -> 127\.0\.0\.1:{port} \(\S+\), up \d+ s, "
                     r"PED operation in progress \(last heard from pedserver \d+\.\d s ago\), "
                     r"1 operation\(s\)", shown), shown
    await ped.send(Frame(0x23, b"abc"))
    assert (await ped.receive()).payload == b"cba"
    await ped.end_operation()
    await ped.aclose()


async def _vanish(daemons: P2P, port: int, name: str) -> None:
    """An HSM gets its link over a raw socket, then hangs up without a Close (a crash)."""
    stream = await trio.open_unix_socket(str(_endpoint(daemons)))
    request = ConnectRequest(host="127.0.0.1", port=port, hsm_name=name)
    await stream.send_all(encode_frame(encode(request)))
    decoder = FrameDecoder()
    with trio.fail_after(WAIT):
        while (frame := decoder.next_frame()) is NEED_DATA:
            decoder.feed(await stream.receive_some(4096))
    answer = decode(frame)
    assert isinstance(answer, ConnectResult) and answer.code is ConnectCode.OK
    await stream.aclose()


async def test_hsm_closing_cleanly_ends_the_link_on_both_sides(pedclient, home):
    async with running_pair(home) as pair:
        await _use_then_close(pedclient, pair.port, "hsm-bye")
        with trio.fail_after(WAIT):  # pedserver was told too, and let the link go
            while pair.server.show()["links"]:
                await trio.sleep(0.01)
    line = await _logged(pedclient, r"\(HSM hsm-bye -> .*\) closed")
    assert line.endswith("; 1 operation(s)")
    assert await _links_of(pedclient, "hsm-bye") == []


async def test_hsm_going_away_without_a_word_ends_the_link(pedclient, home):
    async with running_pair(home) as pair:
        await _vanish(pedclient, pair.port, "hsm-gone")
        with trio.fail_after(WAIT):
            while pair.server.show()["links"]:
                await trio.sleep(0.01)
    await _logged(pedclient, r"\(HSM hsm-gone -> .*\) closed")
    assert await _links_of(pedclient, "hsm-gone") == []


@pytest.mark.parametrize(("end", "reason"), [(_use_then_close, "closed by the HSM"),
                                             (_vanish, "the HSM went away")],
                         ids=["clean-close", "went-away"])
async def test_the_log_says_the_hsm_ended_the_link(pedclient, home, end, reason):
    name = f"hsm-{end.__name__.strip('_')}"
    async with running_pair(home) as pair:
        await end(pedclient, pair.port, name)
        # read while pedserver still runs: its stop would end the link too
        line = await _logged(pedclient, rf"\(HSM {name} -> .*\) closed")
    assert f"closed: {reason};" in line


async def test_pedserver_refusing_the_connection_says_what_to_check(pedclient):
    port = await _free_port()
    with pytest.raises(ConnectFailed) as failed:
        await connect_via_pedclient(_endpoint(pedclient), "127.0.0.1", port,
                                    hsm_name="hsm-refused")
    assert failed.value.code is ConnectCode.REFUSED and failed.value.retriable
    said = f"connection refused by 127.0.0.1:{port}: is pedserver running on 127.0.0.1:{port}?"
    assert said in str(failed.value)
    assert said in await _logged(pedclient, re.escape(said))
    await await_until(lambda: not _links_sync(pedclient, "hsm-refused"), "the attempt forgotten")


async def test_a_silent_listener_is_not_taken_for_a_pedserver(pedclient):
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(functools.partial(trio.serve_tcp, silent, 0,
                                                                 host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        with pytest.raises(ConnectFailed) as failed:
            await connect_via_pedclient(_endpoint(pedclient), "127.0.0.1", port, timeout=1,
                                        hsm_name="hsm-silent")
        nursery.cancel_scope.cancel()
    assert failed.value.code is ConnectCode.TIMEOUT and failed.value.retriable
    said = f"127.0.0.1:{port} accepted the connection but sent no link welcome within 1 s"
    assert said in str(failed.value) and "is it a pedserver?" in str(failed.value)
    assert said in await _logged(pedclient, re.escape(said))


# ---------------------------------------------------------------------- local endpoint


async def test_an_hsm_that_never_asks_is_hung_up_on(pedclient):
    stream = await trio.open_unix_socket(str(_endpoint(pedclient)))
    with trio.fail_after(WAIT):
        assert await stream.receive_some(4096) == b""  # request_timeout is 1 s here
    await stream.aclose()
    await _logged(pedclient, r"local connection \d+: no connect request within 1 s")


async def test_a_peer_request_says_how_to_turn_peer_mode_on(pedclient):
    with pytest.raises(ConnectFailed) as failed:
        await connect_via_pedclient(_endpoint(pedclient), None, peer=PEER, timeout=5)
    assert failed.value.code is ConnectCode.PEER_UNAVAILABLE
    assert "peer-to-peer mode is off in this pedclient" in str(failed.value)
    assert "pedclient mode start --peer-listen" in str(failed.value)


# ---------------------------------------------------------------------- control


async def test_control_socket_answers_show_and_names_what_it_knows(pedclient):
    shown = await _control(pedclient, "show")
    assert shown["socket"] == str(_endpoint(pedclient))
    assert shown["peer_listen"] == "" and shown["peer_links"] == []
    with pytest.raises(ControlError, match="unknown command 'frobnicate'; pedclient knows "
                                           "show and stop"):
        await _control(pedclient, "frobnicate")
    assert (await _control(pedclient, "show"))["pid"] == shown["pid"]  # still serving


async def test_mode_stop_closes_open_links_with_a_reason(home):
    daemons = P2P(home)
    daemons.client_home.mkdir(mode=0o700)
    in_thread = trio.to_thread.run_sync
    await in_thread(lambda: ok(daemons.client("mode", "start")))
    daemons.started.append(("pedclient", daemons.client_home, ()))
    try:
        async with running_pair(home) as pair:
            ped = await connect_via_pedclient(_endpoint(daemons), "127.0.0.1", pair.port,
                                              hsm_name="hsm-held")
            stopped = await in_thread(lambda: daemons.client("mode", "stop"))
            daemons.started.clear()
            assert stopped.returncode == 0 and "pedclient stopped." in stopped.stdout
            closed = await _closed(ped)
            assert closed.code is CloseCode.SHUTTING_DOWN
            assert "pedclient is stopping" in str(closed)
            with trio.fail_after(WAIT):  # pedserver heard of it too
                while pair.server.show()["links"]:
                    await trio.sleep(0.01)
    finally:
        await in_thread(daemons.stop_all)
    log = daemons.client_log()
    assert "stopping: mode stop" in log and "closing 1 link(s): pedclient is stopping" in log
    shown = await in_thread(lambda: daemons.client("mode", "show"))
    assert shown.returncode == 3 and "not running" in shown.stdout
    assert not _endpoint(daemons).exists()


# ---------------------------------------------------------------------- peer mode


def _pair_up(daemons: P2P) -> int:
    """Certificates exchanged, pedclient listening for peers, pedserver up and dialled in."""
    daemons.register_server_at_client()
    port = daemons.start_client()
    daemons.register_client_at_server("127.0.0.1", port)
    daemons.start_server("socket:/nonexistent")
    assert "is up" in ok(daemons.server("mode", "connect", "--name", APPLIANCE))
    return port


async def test_peer_mode_hands_an_hsm_the_connection_pedserver_dialled(
    rig: P2P,  # noqa: F811 (the fixture imported above)
) -> None:
    in_thread = trio.to_thread.run_sync
    port = await in_thread(lambda: _pair_up(rig))
    await await_until(lambda: peer_state(rig) == "connected spare", "a parked spare")
    assert (await in_thread(rig.client_show))["peer_listen"].endswith(f":{port}")
    shown = await in_thread(lambda: ok(rig.client("mode", "show")))
    assert f"peer {PEER}: connected" in shown

    ped = await connect_via_pedclient(_endpoint(rig), None, peer=PEER, hsm_name="hsm-p2p")
    assert ped.result.ok and not ped.result.device.connected  # pedserver has no PED here
    (link,) = (await in_thread(rig.client_show))["links"]
    assert link["hsm"] == "hsm-p2p" and link["target"] == f"peer {PEER!r}"
    await ped.aclose()
    await await_until(lambda: not rig.client_show()["links"], "the peer link closed")
    await await_until(lambda: peer_state(rig) == "connected spare", "the next spare")
    assert re.search(rf"link \d+ \(HSM hsm-p2p -> peer '{PEER}'\) closed: .*; 0 operation",
                     rig.client_log())

    # pedserver stops: its spare hangs up, and an HSM is told what to run over there.
    await in_thread(lambda: rig.stop("pedserver"))
    await await_until(lambda: peer_state(rig) == "not connected", "the spare hung up")
    await _logged(rig, rf"peer '{PEER}' .*: connection closed; waiting for it to dial again")
    with pytest.raises(ConnectFailed) as failed:
        await connect_via_pedclient(_endpoint(rig), None, peer=PEER, timeout=5)
    assert failed.value.code is ConnectCode.PEER_UNAVAILABLE
    assert "pedserver mode connect" in str(failed.value)


async def test_pedserver_refusing_pedclients_certificate_offers_no_link(
    rig: P2P,  # noqa: F811 (the fixture imported above)
) -> None:
    """pedclient's certificate changed after pedserver pinned it: pedserver refuses it,
    pedclient logs the refusal and gives its HSMs nothing to connect to."""
    in_thread = trio.to_thread.run_sync
    await in_thread(rig.register_server_at_client)
    port = await in_thread(rig.start_client)
    await in_thread(lambda: rig.register_client_at_server("127.0.0.1", port))
    await in_thread(lambda: rig.stop("pedclient"))
    ok(await in_thread(lambda: rig.client("certificate", "regen")))
    await in_thread(lambda: rig.start_client(port=port))
    await in_thread(lambda: rig.start_server("socket:/nonexistent"))
    result = await in_thread(lambda: rig.server("mode", "connect", "--name", APPLIANCE))
    assert result.returncode == 1 and "is not up" in result.stderr
    ours = load_identity(rig.client_home).fingerprint  # the new one
    line = await _logged(rig, f"refused our certificate {ours}")
    assert "unknown (not registered) there" in line
    assert "fix: on that host run: pedserver appliance register" in line
    assert peer_state(rig) in ("absent", "not connected")
    with pytest.raises(ConnectFailed) as failed:
        await connect_via_pedclient(_endpoint(rig), None, peer=PEER, timeout=5)
    assert failed.value.code is ConnectCode.PEER_UNAVAILABLE
