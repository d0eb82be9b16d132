"""Zeroization is real, the audit chain catches tampering, the RPV is sealed, state survives."""

from __future__ import annotations

import json
import sqlite3

import pytest

from hsm.errors import (
    ConfirmationRequired,
    InvalidCommand,
    NotInitialised,
    NotLoggedIn,
    PedUnavailable,
    StateCorrupt,
)
from hsm.store import HSM_SCOPE, Store
from tests.hsm.rig import Rig

VALUE = b"a very recognisable object value 0123456789"


def _all_bytes(rig: Rig) -> bytes:
    return b"".join(p.read_bytes() for p in rig.home.iterdir() if p.is_file())


async def test_zeroize_removes_objects_from_disk(rig: Rig) -> None:
    await rig.init_partition("p1")
    await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    rig.hsm.objects.create("p1", "k1", VALUE)
    [(_, blob)] = rig.store.objects("p1")
    assert VALUE not in _all_bytes(rig)  # stored encrypted
    assert blob in _all_bytes(rig)
    with pytest.raises(ConfirmationRequired):
        rig.hsm.admin.zeroize(force=False)
    rig.hsm.admin.zeroize(force=True)
    assert blob not in _all_bytes(rig)  # secure_delete + WAL checkpoint: really gone
    assert rig.hsm.admin.show()["partitions"] == []
    with pytest.raises(NotInitialised):
        await rig.hsm.admin.login(rig.notify)


async def test_objects_are_readable_only_through_the_role(rig: Rig) -> None:
    await rig.init_partition("p1", with_cu=True)
    rig.hsm.objects.create("p1", "k1", VALUE)
    rig.hsm.roles.logout("p1")
    with pytest.raises(NotLoggedIn):
        rig.hsm.objects.list_objects("p1")
    await rig.hsm.roles.login(rig.notify, "p1", "cu", None)
    assert rig.hsm.objects.list_objects("p1")[0]["size"] == len(VALUE)


async def test_audit_chain_detects_edit_removal_and_reorder(rig: Rig) -> None:
    await rig.init_partition("p1")
    rig.ped.plan.append(("pin", "blue0"))
    rig.hsm.admin.logout()
    with pytest.raises(Exception, match="login failed"):
        await rig.hsm.admin.login(rig.notify)
    assert rig.hsm.auditor.verify()["ok"]
    events = [r["event"] for r in rig.hsm.state.audit.records()]
    for expected in (
        "hsm initialised",
        "login",
        "login failed",
        "partition created",
        "partition initialised",
        "role initialised",
        "logout",
    ):
        assert expected in events
    path = rig.hsm.state.audit.path
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)

    # edit one field of one line
    rec = json.loads(lines[3])
    rec["event"] = "nothing happened"
    edited = [
        *lines[:3],
        (json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n").encode(),
        *lines[4:],
    ]
    path.write_bytes(b"".join(edited))
    result = rig.hsm.auditor.verify()
    assert not result["ok"] and "line 4" in result["problem"] and "altered" in result["problem"]

    path.write_bytes(b"".join(lines[:2] + lines[3:]))  # remove a line
    assert "line 3" in rig.hsm.auditor.verify()["problem"]

    path.write_bytes(b"".join([lines[0], lines[2], lines[1], *lines[3:]]))  # reorder
    assert not rig.hsm.auditor.verify()["ok"]

    path.write_bytes(b"".join(lines[:-1]))  # cut the last record off
    assert "removed from the end" in rig.hsm.auditor.verify()["problem"]

    path.write_bytes(original)
    assert rig.hsm.auditor.verify()["ok"]


async def test_audit_log_is_for_the_auditor_and_survives_zeroize(rig: Rig) -> None:
    await rig.init_hsm()
    with pytest.raises(NotLoggedIn, match="audit login"):
        rig.hsm.auditor.show(None)
    rig.ped.plan.append("white")
    await rig.hsm.auditor.init(rig.notify, force=False)
    await rig.hsm.auditor.login(rig.notify)
    n = len(rig.hsm.auditor.show(None))
    rig.hsm.admin.zeroize(force=True)
    assert len(rig.hsm.state.audit.records()) > n
    assert rig.hsm.auditor.verify()["ok"]
    assert rig.hsm.state.audit.records()[-1]["event"] == "hsm zeroized"
    with pytest.raises(NotLoggedIn):
        rig.hsm.auditor.show(None)  # zeroization logged everybody out...
    await rig.hsm.auditor.login(rig.notify)  # ...but the auditor can read what happened
    assert rig.hsm.auditor.show(1)[0]["event"] == "login"


async def test_rpv_init_is_sealed_needs_so_and_survives_zeroize(rig: Rig) -> None:
    out = await rig.hsm.ped.vector_init(rig.notify)  # zeroized HSM: no SO needed
    assert "Remote PED Vector" in out
    rpv = rig.ped.keys["orange0"].secret
    assert rpv not in _all_bytes(rig)
    assert rig.hsm.admin.show()["rpv"] == "set"
    await rig.init_hsm()
    rig.hsm.admin.logout()
    with pytest.raises(NotLoggedIn, match="hsm login"):
        await rig.hsm.ped.vector_init(rig.notify)
    rig.router.local = False
    await rig.hsm.admin.login(rig.notify)
    with pytest.raises(PedUnavailable):
        await rig.hsm.ped.vector_init(rig.notify)  # only through a local PED
    rig.router.local = True
    # read an existing orange key: share its RPV with another HSM
    rig.ped.keys["shared"] = rig.ped.keys["orange0"].__class__(
        rig.ped.keys["orange0"].color, b"S" * 32, b"12345678"
    )
    rig.ped.plan.append(("reuse", "shared", "orange-copy"))
    await rig.hsm.ped.vector_init(rig.notify)
    assert bytes(rig.hsm.ped._rpv()) == b"S" * 32
    rig.hsm.admin.zeroize(force=True)
    assert rig.hsm.admin.show()["rpv"] == "set"
    assert "erased" in await rig.hsm.ped.vector_erase()
    assert rig.hsm.admin.show()["rpv"] == "not set"
    with pytest.raises(NotInitialised, match="vector init"):
        await rig.hsm.ped.connect(rig.notify, "127.0.0.1", 1503)


async def test_ped_connect_prints_the_orange_key_prompt(rig: Rig) -> None:
    await rig.hsm.ped.vector_init(rig.notify)
    out = await rig.hsm.ped.connect(rig.notify, "ped.example", 1503)
    assert "PED operation required to connect to Remote PED - use orange PED Key(s)." in rig.notes
    assert "ped.example:1503" in out
    assert "disconnected" in await rig.hsm.ped.disconnect()
    events = [r["event"] for r in rig.hsm.state.audit.records()]
    assert "ped connected" in events and "ped disconnected" in events


async def test_ped_connect_over_a_named_peer_link(rig: Rig) -> None:
    await rig.hsm.ped.vector_init(rig.notify)
    out = await rig.hsm.ped.connect(rig.notify, "", 0, peer="workstation-1")
    assert "peer workstation-1" in out
    assert "disconnected" in await rig.hsm.ped.disconnect()
    with pytest.raises(InvalidCommand, match="--peer needs the name"):
        await rig.hsm.ped.connect(rig.notify, "", 0, peer="  ")
    with pytest.raises(InvalidCommand, match="not a TCP port"):
        await rig.hsm.ped.connect(rig.notify, "ped.example", 0)


def test_ped_timeouts_defaults_ranges_and_zero(rig: Rig) -> None:
    assert rig.hsm.ped.timeouts() == {"rped": 1800, "pedk": 200, "pedo": 920}
    rig.hsm.ped.timeout_set("pedk", 600)
    rig.hsm.ped.timeout_set("rped", 1)
    rig.hsm.ped.timeout_set("pedo", 99999)
    assert rig.hsm.ped.timeouts() == {"rped": 1, "pedk": 600, "pedo": 99999}
    for kind, bad in (("pedk", 199), ("pedk", 601), ("pedo", 919), ("rped", 100000)):
        with pytest.raises(InvalidCommand, match="0 restores the default"):
            rig.hsm.ped.timeout_set(kind, bad)
    with pytest.raises(InvalidCommand, match="rped, pedk, pedo"):
        rig.hsm.ped.timeout_set("pedx", 5)
    rig.hsm.ped.timeout_set("pedk", 0)
    rig.power_cycle()
    assert rig.hsm.ped.timeouts() == {"rped": 1, "pedk": 200, "pedo": 99999}


async def test_counters_survive_a_crash(rig: Rig) -> None:
    await rig.init_partition("p1")
    rig.ped.plan.append(("pin", "p1-co"))
    with pytest.raises(Exception, match="login failed"):
        await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    rig.crash()
    assert rig.store.get_role("p1", "co").failures == 1
    assert rig.hsm.partitions.show("p1")["roles"]["co"]["attempts_left"] == 9


def test_corrupt_state_is_refused(rig: Rig) -> None:
    rig.store.close()
    db = rig.home / "state.db"
    data = bytearray(db.read_bytes())
    data[:16] = b"garbage garbage!"
    db.write_bytes(bytes(data))
    (rig.home / "state.db-wal").unlink(missing_ok=True)
    with pytest.raises(StateCorrupt, match="state database"):
        Store(rig.home)
    rig.store = sqlite3.connect(":memory:")  # type: ignore[assignment]


def test_no_secret_in_reprs(rig: Rig) -> None:
    assert "hidden" in repr(rig.master)
    row = rig.store.get_role(HSM_SCOPE, "hsm-so")
    assert row is None or "wrapped" not in repr(row)


async def test_reinitialising_needs_the_owner_and_a_confirmation(rig: Rig) -> None:
    await rig.init_partition("p1")
    rig.ped.plan.append("white")
    await rig.hsm.auditor.init(rig.notify, force=False)
    rig.hsm.admin.logout()
    rig.hsm.roles.logout(None)
    with pytest.raises(NotLoggedIn, match="partition SO"):
        await rig.hsm.partitions.init(rig.notify, "p1", force=True)
    with pytest.raises(NotLoggedIn, match="audit login"):
        await rig.hsm.auditor.init(rig.notify, force=True)
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    with pytest.raises(ConfirmationRequired):
        await rig.hsm.partitions.init(rig.notify, "p1", force=False)
    rig.ped.plan.extend(["p1-so-2", "p1-dom-2"])
    await rig.hsm.partitions.init(rig.notify, "p1", force=True)
    assert rig.hsm.partitions.show("p1")["roles"]["co"]["state"] == "not initialised"
