"""hsmclient's daemon in process: the applications' socket, ``show`` and ``slots`` on the
control socket, stale and foreign sockets, the backend seam.

`FakeBackend` stands in for RemoteBackend (other tests name it through the daemon's test
hook, ``HSMCLIENT_TEST_BACKEND=tests.hsmclient.test_daemon:FakeBackend``): each
registered server shows two partitions, a server whose name starts with ``down`` is
unreachable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from hsmclient.daemon import (
    BACKEND_ENV,
    HsmClient,
    HsmClientStartError,
    load_backend,
    server_states,
    slot_lines,
)
from hsmclient.p11kit import open_p11kit_listener
from hsmclient.settings import Layout, Settings
from hsmclient.slots import SlotMap
from ped.daemon.control import control_request
from ped.pkcs11.token import Application, Backend
from ped.tls import PinStore, ensure_identity
from tests.pedserver.fakes import short_tmp

FAKE = "tests.hsmclient.test_daemon:FakeBackend"


@attrs.frozen
class Row:
    slot_id: int  # -1: a row about the server, no slot (as RemoteBackend's SlotRow)
    server: str
    serial: str
    label: str
    state: str


class FakeBackend:
    """RemoteBackend's shape with canned partitions (see the module docstring)."""

    def __init__(self, home: Path, pins: PinStore, slot_map: SlotMap) -> None:
        self.pins = pins
        self.slot_map = slot_map
        self.closed = False

    async def slot_rows(self) -> list[Row]:
        rows = []
        for peer in self.pins.list():
            if peer.name.startswith("down"):
                rows.append(Row(-1, peer.name, "", "", "server unreachable: connection "
                                "refused; is pedhsm running on the HSM host?"))
                continue
            for serial, label in (("1001", "app"), ("1002", "web")):
                rows.append(Row(self.slot_map.slot_for(peer.name, serial), peer.name,
                                serial, label, "ready"))
        return rows

    async def connect(self) -> Application:
        raise AssertionError("the fake serves no application")

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def home() -> Iterator[Path]:
    with short_tmp() as path:
        yield path


def register(home: Path, *names: str) -> None:
    cert = ensure_identity(home / "peer", "hsm").certificate
    pins = PinStore(home, program="hsmclient")
    for n, name in enumerate(names):
        other = cert if n == 0 else ensure_identity(home / f"peer{n}", "hsm").certificate
        pins.register(name, other, ip="127.0.0.1", port=1792 + n)


async def fake_serve(listener: trio.SocketListener, backend: Backend) -> None:
    """A stand-in p11-kit server: says hello and hangs up."""

    async def answer(stream: trio.SocketStream) -> None:
        await stream.send_all(b"p11-kit here")
        await stream.aclose()

    await trio.serve_listeners(answer, [listener])


P11KIT = (open_p11kit_listener, fake_serve)


def daemon(home: Path, backend: Backend | None = None, **settings: Any) -> HsmClient:
    layout = Layout(home)
    pins = PinStore(home, program="hsmclient")
    return HsmClient(Settings(**settings), home=home, endpoint_path=layout.endpoint,
                     backend=backend or FakeBackend(home, pins, SlotMap(home)),
                     control_path=layout.control, p11kit=P11KIT)


async def test_serves_the_socket_and_shows_servers_and_slots(home: Path) -> None:
    register(home, "hsm1", "down1")
    client = daemon(home)
    async with trio.open_nursery() as nursery:
        path = await nursery.start(client.serve)
        assert path == home / "pkcs11.sock"
        assert path.stat().st_mode & 0o777 == 0o600
        stream = await trio.open_unix_socket(str(path))
        assert await stream.receive_some(100) == b"p11-kit here"
        await stream.aclose()

        info = await control_request(home / "control.sock", "show")
        assert info["p11kit_address"] == f"P11_KIT_SERVER_ADDRESS=unix:path={path}"
        assert [s["name"] for s in info["servers"]] == ["down1", "hsm1"]
        states = {s["name"]: s["state"] for s in info["servers"]}
        assert states["hsm1"] == "reachable, 2 partition(s)"
        assert states["down1"].startswith("server unreachable: connection refused")
        assert [(r["slot_id"], r["label"]) for r in info["slots"] if r["slot_id"] is not None] \
            == [(0, "app"), (1, "web")]
        answer = await control_request(home / "control.sock", "slots")
        assert answer["slots"] == info["slots"] and answer["error"] == ""
        client.request_stop("test")
    assert not path.exists()
    assert client.backend.closed  # type: ignore[attr-defined]


async def test_slow_servers_give_show_an_answer_saying_so(home: Path) -> None:
    class Slow(FakeBackend):
        async def slot_rows(self) -> list[Row]:
            await trio.sleep_forever()
            raise AssertionError

    register(home, "hsm1")
    client = daemon(home, Slow(home, PinStore(home, program="hsmclient"), SlotMap(home)),
                    slot_query_timeout=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        info = await control_request(home / "control.sock", "show")
        assert info["slots"] is None
        assert info["error"] == "the servers did not answer within 1 s"
        assert info["servers"][0]["state"] == "not asked"
        client.request_stop("test")


async def test_a_stale_socket_is_replaced_a_live_one_or_a_file_refused(home: Path) -> None:
    path = home / "pkcs11.sock"
    stale = trio.socket.socket(trio.socket.AF_UNIX)
    await stale.bind(str(path))
    stale.close()  # the file stays: what a crash leaves
    client = daemon(home)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        with pytest.raises(HsmClientStartError, match=r"already answers on .* give --socket"):
            await daemon(home).serve()  # the first one is live
        client.request_stop("test")
    path.write_text("mine")
    with pytest.raises(HsmClientStartError, match="exists and is not a socket; remove it"):
        await daemon(home).serve()
    assert path.read_text() == "mine"


async def test_a_socket_path_too_long_is_refused(home: Path) -> None:
    client = daemon(home)
    client.endpoint_path = home / ("x" * 120)
    with pytest.raises(HsmClientStartError, match="too long"):
        await client.serve()


async def test_slot_lines_from_a_backend_without_slot_rows() -> None:
    from ped.pkcs11.token import SlotInfo, TokenInfo

    class App:
        async def slots(self) -> list[SlotInfo]:
            return [SlotInfo(3, "one", True), SlotInfo(4, "gone", False)]

        async def token_info(self, slot_id: int) -> TokenInfo:
            return TokenInfo(label="app", serial="77")

        async def close(self) -> None:
            self.closed = True

    app = App()

    class Plain:
        async def connect(self) -> App:
            return app

    lines = await slot_lines(Plain())  # type: ignore[arg-type]
    assert [(x.slot_id, x.serial, x.label, x.state) for x in lines] == [
        (3, "77", "app", "ready"), (4, "", "gone", "token not present")]
    assert app.closed


def test_the_backend_seam(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pins = PinStore(home, program="hsmclient")
    monkeypatch.setenv(BACKEND_ENV, FAKE)
    assert isinstance(load_backend(home, pins, SlotMap(home)), FakeBackend)
    monkeypatch.setenv(BACKEND_ENV, "no.such.module:X")
    with pytest.raises(HsmClientStartError, match=r"cannot load the backend no\.such\.module:X"):
        load_backend(home, pins, SlotMap(home))


def test_server_states_without_an_answer(home: Path) -> None:
    register(home, "hsm1")
    pins = PinStore(home, program="hsmclient")
    (state,) = server_states(pins, [])
    assert state["state"] == "reachable, no partition assigned to this client"
    assert state["address"] == "127.0.0.1:1792"


async def test_slot_list_and_verify_ask_the_running_daemon(home: Path) -> None:
    import io

    from hsmclient.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        return main([*argv, "--home", str(home)], out=out, err=err), out.getvalue(), \
            err.getvalue()

    client = daemon(home)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        code, out, _ = await trio.to_thread.run_sync(run, "slot", "list")
        assert code == 0 and out.startswith("No slots: no server registered. Add one with:")
        code, _, err = await trio.to_thread.run_sync(run, "verify")
        assert code == 1 and "no server registered" in err
        register(home, "hsm1")  # read afresh: no restart needed
        code, out, _ = await trio.to_thread.run_sync(run, "slot", "list")
        assert code == 0 and out.splitlines()[1].split() == ["0", "app", "1001", "hsm1",
                                                               "ready"]
        code, out, _ = await trio.to_thread.run_sync(run, "verify")
        assert code == 0 and out.startswith("Server hsm1 (127.0.0.1:1792): reachable")
        code, out, _ = await trio.to_thread.run_sync(run, "mode", "show")
        assert code == 0 and "    Server hsm1 (127.0.0.1:1792): reachable, 2 partition(s)" \
            in out.splitlines()
        client.request_stop("test")
