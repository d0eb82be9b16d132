"""The HSM engine against the emulated PED (script operator), through ped.hsm_api.

The PED runs in this process (`InProcessPedDriver`) in local mode: the HSM's channel is
keyed by the local-PED RPV and the operator allows it on the PED.  Everything between the
HSM's `PedRouter` and the PED's engine is the production code.
"""

from __future__ import annotations

import pytest
import trio

from hsm.crypto import MasterKey
from hsm.engine import Hsm
from hsm.errors import LockedOut, LoginFailed, PedUnavailable, Zeroized
from hsm.store import HSM_SCOPE, Store
from keys import Keyring, new_keyset
from keys.colors import Color
from ped.device.emulated.script import ScriptOperator, load_script
from ped.device.emulated.server import EmulatedPed
from pedtools.fakes.inprocess import InProcessPedDriver
from tests.hsm.emulated import Bench, Script

SO_PIN = "4321"


async def test_hsm_so_lifecycle_on_the_emulated_ped(bench: Bench) -> None:
    so, red, stranger = bench.blanks[0], bench.blanks[1], bench.extra["stranger"]
    s = Script()
    s.session().imprint(so, pin=SO_PIN).imprint(red)  # hsm init
    s.session().read(Color.BLUE, so, SO_PIN)  # hsm login: right key and PIN
    s.session().read(Color.BLUE, so, "9999")  # wrong PIN: counted
    s.session().read(Color.BLUE, stranger)  # a blue key of another keyset: counted
    # the red key offered for blue is refused on the PED (not counted), then the right one
    s.session().read(Color.BLUE, red).read(Color.BLUE, so, SO_PIN)
    s.session().read(Color.BLUE, so, "1111")
    s.session().read(Color.BLUE, so, "2222")
    s.session().read(Color.BLUE, so, "3333")
    operator = bench.run_script(s)

    await bench.hsm.admin.init(bench.notify, "emulated")
    assert "Please attend to the PED. It is the local PED." in bench.notes
    # what the PED is asked for is shown on the host: colour, for whom, the key timeout
    asked = [n for n in bench.notes if n.startswith("PED: imprint")]
    assert asked[0].startswith("PED: imprint the blue key(s) for HSM SO"), asked
    assert asked[1].startswith("PED: imprint the red key(s)") and "pedk 200 s per key" in asked[1]
    await bench.hsm.admin.login(bench.notify)
    bench.hsm.admin.logout()
    with pytest.raises(LoginFailed, match="1 consecutive failure"):
        await bench.hsm.admin.login(bench.notify)
    with pytest.raises(LoginFailed, match="another keyset"):
        await bench.hsm.admin.login(bench.notify)
    assert bench.store.get_role(HSM_SCOPE, "hsm-so").failures == 2
    await bench.hsm.admin.login(bench.notify)  # wrong colour on the way did not count
    assert bench.store.get_role(HSM_SCOPE, "hsm-so").failures == 0
    bench.hsm.admin.logout()
    for n in (1, 2):
        with pytest.raises(LoginFailed, match=f"{n} consecutive"):
            await bench.hsm.admin.login(bench.notify)
    with pytest.raises(Zeroized):
        await bench.hsm.admin.login(bench.notify)
    assert not bench.hsm.state.initialised
    with trio.fail_after(30):
        await operator.done.wait()


async def test_partition_roles_and_co_lockout_on_the_emulated_ped(bench: Bench) -> None:
    b = bench.blanks
    s = Script()
    s.session().imprint(b[0]).imprint(b[1])  # hsm init (no PINs: fast)
    s.session().read(Color.BLUE, b[0])  # hsm login
    s.session().imprint(b[2]).imprint(b[3])  # partition init: partition SO, domain
    s.session().read(Color.BLUE, b[2])  # role login so
    s.session().imprint(b[4])  # role init co (black)
    s.session().read(Color.BLACK, b[4])  # role login co
    s.session().read(Color.BLACK, b[4])  # role activate co (policy 22)
    s.session().read(Color.BLACK, b[5])  # a blank black-slot key: refused on the PED...
    operator = bench.run_script(s)
    h, n = bench.hsm, bench.notify
    await h.admin.init(n, "emulated")
    await h.admin.login(n)
    h.partitions.create("p1")
    await h.partitions.init(n, "p1")
    await h.roles.login(n, "p1", "so", None)
    h.partitions.changepolicy("p1", 20, 2)
    h.partitions.changepolicy("p1", 22, 1)
    await h.roles.init(n, "p1", "co", b"app secret")
    await h.roles.login(n, "p1", "co", None)
    h.objects.create("p1", "k1", b"value")
    await h.roles.activate(n, "p1", "co")
    # with the CO activated, an application logs in with the challenge alone: no PED
    await h.roles.login(n, "p1", "co", b"app secret")
    assert [o["label"] for o in h.objects.list_objects("p1")] == ["k1"]
    with pytest.raises(LoginFailed, match="wrong challenge"):
        await h.roles.login(n, "p1", "co", b"guess 1")
    with pytest.raises(LockedOut, match="permanently"):
        await h.roles.login(n, "p1", "co", b"guess 2")  # policy 20 lowered the threshold to 2
    # ...and the pending PED step is never reached: the role is locked before the PED
    with pytest.raises(LockedOut):
        await h.roles.login(n, "p1", "co", None)
    assert not operator.done.is_set()


async def test_ped_key_timeout_is_not_counted(bench: Bench) -> None:
    b = bench.blanks
    s = Script()
    s.session().imprint(b[0]).imprint(b[1])  # hsm init
    s.session()  # hsm login: the handshake is allowed, then nobody presents a key
    operator = bench.run_script(s)
    await bench.hsm.admin.init(bench.notify, "emulated")
    # A short PED-key timeout (below the shell's 200 s minimum, for the test only).
    bench.router._timeouts = lambda: {"rped": 1800, "pedk": 1, "pedo": 920}
    with pytest.raises(PedUnavailable, match=r"not counted|did not complete"):
        await bench.hsm.admin.login(bench.notify)
    assert operator.done.is_set()
    assert bench.store.get_role(HSM_SCOPE, "hsm-so").failures == 0


async def test_rpv_init_imprints_an_orange_key_that_opens_a_remote_session(
    bench: Bench, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = bench.blanks
    s = Script()
    s.session().imprint(b[0]).imprint(b[1])  # hsm init
    s.session().read(Color.BLUE, b[0])  # hsm login
    s.session().imprint(b[2])  # hsm ped vector init: a new RPV on an orange key
    local_operator = bench.run_script(s)
    h, n = bench.hsm, bench.notify
    await h.admin.init(n, "emulated")
    await h.admin.login(n)
    await h.ped.vector_init(n)
    await local_operator.done.wait()

    r = Script(orange=b[2])
    r.session()  # hsm ped connect: the orange key, once
    r.read(Color.BLUE, b[0])  # hsm login through the remote PED, no orange key again
    r.read(Color.BLUE, b[0])  # and again
    remote_operator = await _remote_ped(bench, nursery, monkeypatch, r)
    await nursery.start(bench.router.run)
    out = await h.ped.connect(n, "ped.example", 1503)
    assert "PED operation required to connect to Remote PED - use orange PED Key(s)." in (
        bench.notes
    )
    assert "ped.example:1503" in out
    status = bench.router.status()
    assert status["mode"] == "remote" and status["connected"]
    h.admin.logout()
    await h.admin.login(n)  # served by the remote PED while it is connected
    h.admin.logout()
    await h.admin.login(n)
    await remote_operator.done.wait()
    assert "disconnected" in await h.ped.disconnect()
    assert bench.router.status()["mode"] == "local"
    events = [r["event"] for r in h.state.audit.records()]
    assert "ped connected" in events and "ped disconnected" in events
    assert h.auditor.verify()["ok"]


async def test_a_second_hsm_shares_the_rpv_by_reading_the_orange_key(bench: Bench) -> None:
    b = bench.blanks
    s = Script()
    s.session().imprint(b[0])  # vector init on the zeroized HSM (no SO needed)
    s.session()  # second HSM: vector init, reusing the orange key
    s.parts.append('[[step]]\nexpect = "Reuse an existing"\npress = "YES"\n')
    s.read(Color.ORANGE, b[0])
    s.parts.append('[[step]]\nexpect = "duplicating"\npress = "NO"\n')
    operator = bench.run_script(s)
    await bench.hsm.ped.vector_init(bench.notify)
    first = bytes(bench.hsm.ped._rpv())
    other_home = bench.tmp / "home2"
    other_home.mkdir(mode=0o700)
    store = Store(other_home)
    try:
        other = Hsm(
            other_home,
            store,
            MasterKey.load_or_create(other_home),
            bench.clock,
            bench.router,
            "150003",
        )
        await other.ped.vector_init(bench.notify)
        assert bytes(other.ped._rpv()) == first
    finally:
        store.close()
    await operator.done.wait()


async def _remote_ped(
    bench: Bench, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, script: Script
) -> ScriptOperator:
    """A remote PED (remote mode: it asks for the orange key) behind a stand-in for
    pedclient; the router keeps its session open between operations."""
    remote_ped = EmulatedPed(bench.keys, mode="remote", serial="EMU-REMOTE")
    remote_driver = InProcessPedDriver(remote_ped, nursery)
    await remote_driver.open()

    async def fake_connect(socket_path: str, host: str, port: int, **kw: object) -> object:
        assert (socket_path, host, port) == ("/run/pedclient.sock", "ped.example", 1503)
        assert kw["idle_timeout"] == bench.router._timeouts()["rped"]
        return await remote_driver.open_session()

    monkeypatch.setattr("ped.link.connect_via_pedclient", fake_connect)
    bench.router.pedclient_socket = "/run/pedclient.sock"
    path = script.write(bench.tmp / "remote.toml")
    operator = ScriptOperator(remote_ped.panel, load_script(path, bench.keys))
    nursery.start_soon(operator.run)
    return operator


async def test_remote_link_idle_timeout_and_wrong_orange_key(
    bench: Bench, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = bench.blanks
    s = Script()
    s.session().imprint(b[0])  # vector init (zeroized HSM)
    local_operator = bench.run_script(s)
    await bench.hsm.ped.vector_init(bench.notify)
    await local_operator.done.wait()
    [wrong] = Keyring(bench.keys).imprint(
        new_keyset(Color.ORANGE, "another HSM's RPV", 1, 1), create=True
    )
    r = Script(orange=wrong.name)
    r.session()  # connect with another HSM's orange key: the handshake fails
    r.orange = b[0]
    r.session()  # second connect: this HSM's orange key
    operator = await _remote_ped(bench, nursery, monkeypatch, r)
    await nursery.start(bench.router.run)
    with pytest.raises(PedUnavailable, match="does not hold this HSM's Remote PED Vector"):
        await bench.hsm.ped.connect(bench.notify, "ped.example", 1503)
    assert not bench.router.status()["connected"]
    await bench.hsm.ped.connect(bench.notify, "ped.example", 1503)
    await operator.done.wait()
    bench.router._timeouts = lambda: {"rped": 1, "pedk": 200, "pedo": 920}
    with trio.fail_after(30):
        await bench.dropped.wait()
    assert "closed by this HSM (idle timeout" in bench.drops[0]
    # the lost link is not replaced by the local PED until the administrator says so
    status = bench.router.status()
    assert status["mode"] == "remote" and not status["connected"]
    assert status["lost"]["by"] == "this HSM"
    last = bench.hsm.state.audit.records()[-1]
    assert last["event"] == "ped disconnected" and last["by"] == "this HSM"
    with pytest.raises(PedUnavailable, match=r"ped\.example:1503 was closed by this HSM"):
        await bench.hsm.admin.init(bench.notify, "never")
    assert "forgotten" in await bench.hsm.ped.disconnect()
    assert bench.router.status()["mode"] == "local"
