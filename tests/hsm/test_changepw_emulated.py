"""Changing secrets against the emulated PED (script operator), through ped.hsm_api: the
old key read as a login reads it, the new key set imprinted with the PED's questions."""

from __future__ import annotations

import pytest
import trio

from hsm.errors import LoginFailed, PolicyError
from hsm.policy import Role
from hsm.store import HSM_SCOPE
from keys.colors import Color
from tests.hsm.emulated import Bench, Script, step

PIN = "2468"


def reuse(script: Script, color: Color, key: str) -> Script:
    """The operator answers YES to 'Reuse an existing keyset?' and presents *key*."""
    script.parts.append(step("Reuse an existing", press="YES"))
    script.parts.append(step(f"Insert a {color.label.upper()} PED key", insert=key))
    script.parts.append(step("duplicating", press="NO"))
    return script


async def test_hsm_changepw_on_the_emulated_ped(bench: Bench) -> None:
    b = bench.blanks
    so, red, new = b[0], b[1], b[2]
    s = Script()
    s.session().imprint(so).imprint(red)  # hsm init
    s.session().read(Color.BLUE, so)  # hsm login
    s.session().read(Color.BLUE, so)  # hsm changepw: the proof...
    reuse(s.session(), Color.BLUE, so)  # ...and the operator reuses the same keyset: refused
    s.session().read(Color.BLUE, so)  # hsm changepw again: the proof...
    s.session().imprint(new, pin=PIN)  # ...and a new key set, with a PED PIN
    s.session().read(Color.BLUE, so)  # the old key: another keyset now, counted
    s.session().read(Color.BLUE, new, PIN)  # the new key and its PIN
    operator = bench.run_script(s)
    h, n = bench.hsm, bench.notify
    await h.admin.init(n, "emulated")
    await h.admin.login(n)
    old = bench.store.get_role(HSM_SCOPE, Role.HSM_SO.value)
    with pytest.raises(PolicyError, match="keeps the old secret"):
        await h.admin.changepw(n)
    assert bench.store.get_role(HSM_SCOPE, Role.HSM_SO.value) == old
    out = await h.admin.changepw(n)
    assert "a new blue key set now opens it" in out
    assert any(t.startswith("PED: imprint the blue key(s) for HSM SO") for t in bench.notes)
    h.admin.logout()
    with pytest.raises(LoginFailed, match="another keyset"):
        await h.admin.login(n)
    assert await h.admin.login(n) == "HSM SO logged in."
    row = bench.store.get_role(HSM_SCOPE, Role.HSM_SO.value)
    assert row is not None and row.failures == 0 and old is not None
    assert row.keyset_id != old.keyset_id
    with trio.fail_after(30):
        await operator.done.wait()


async def test_co_changepw_on_the_emulated_ped_keeps_objects(bench: Bench) -> None:
    b = bench.blanks
    s = Script()
    s.session().imprint(b[0]).imprint(b[1])  # hsm init
    s.session().read(Color.BLUE, b[0])  # hsm login
    s.session().imprint(b[2]).imprint(b[3])  # partition init
    s.session().read(Color.BLUE, b[2])  # role login so
    s.session().imprint(b[4])  # role init co
    s.session().read(Color.BLACK, b[4])  # role login co
    s.session().read(Color.BLACK, b[4])  # role changepw co: the proof
    s.session().imprint(b[5])  # the new black key set (the new challenge is given)
    s.session().read(Color.BLACK, b[5])  # role login co with the new key
    operator = bench.run_script(s)
    h, n = bench.hsm, bench.notify
    await h.admin.init(n, "emulated")
    await h.admin.login(n)
    h.partitions.create("p1")
    await h.partitions.init(n, "p1")
    await h.roles.login(n, "p1", "so", None)
    await h.roles.init(n, "p1", "co", b"old challenge")
    await h.roles.login(n, "p1", "co", None)
    h.objects.create("p1", "k1", b"value")
    out = await h.roles.changepw(n, "p1", "co", b"new challenge")
    assert "PED secret and challenge secret changed" in out
    h.roles.logout(None)
    await h.roles.login(n, "p1", "co", None)
    assert [o["label"] for o in h.objects.list_objects("p1")] == ["k1"]
    with trio.fail_after(30):
        await operator.done.wait()
