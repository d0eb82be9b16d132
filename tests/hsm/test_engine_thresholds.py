"""Every row of REFERENCE's failed-login table, through the engine with an in-test PED."""

from __future__ import annotations

import pytest

from hsm import logins as logins_mod
from hsm.errors import (
    ConfirmationRequired,
    LockedOut,
    LoginFailed,
    LoginRefused,
    NotInitialised,
    PedUnavailable,
    PolicyError,
    Zeroized,
)
from hsm.store import HSM_SCOPE
from tests.hsm.fakeped import FakeKey
from tests.hsm.rig import CHAL, Rig

# --- HSM SO: 3, fixed -> HSM zeroized ------------------------------------------------


async def test_hsm_so_three_consecutive_failures_zeroize_the_hsm(rig: Rig) -> None:
    await rig.init_partition("p1")
    await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    rig.hsm.objects.create("p1", "k1", b"object value")
    rig.hsm.admin.logout()
    blue = rig.ped.keys["blue0"]
    rig.ped.keys["thief"] = FakeKey(blue.color, b"x" * 32, blue.keyset_id)  # a forged copy
    for attempt in (1, 2):
        rig.ped.plan.append("thief")
        with pytest.raises(LoginFailed, match=f"{attempt} consecutive failure"):
            await rig.hsm.admin.login(rig.notify)
    assert rig.store.get_role(HSM_SCOPE, "hsm-so").failures == 2
    rig.ped.plan.append("thief")
    with pytest.raises(Zeroized, match="ZEROIZED"):
        await rig.hsm.admin.login(rig.notify)
    shown = rig.hsm.admin.show()
    assert shown["state"] == "zeroized"
    assert shown["partitions"] == []
    assert rig.store.get_role(HSM_SCOPE, "hsm-so") is None
    with pytest.raises(NotInitialised):
        await rig.hsm.admin.login(rig.notify)


async def test_hsm_so_success_resets_the_count(rig: Rig) -> None:
    await rig.init_hsm()
    rig.hsm.admin.logout()
    for _ in range(2):
        rig.ped.plan.append(("pin", "blue0"))  # wrong PED PIN: counted
        with pytest.raises(LoginFailed):
            await rig.hsm.admin.login(rig.notify)
    await rig.hsm.admin.login(rig.notify)
    assert rig.store.get_role(HSM_SCOPE, "hsm-so").failures == 0
    for _ in range(2):
        rig.ped.plan.append(("pin", "blue0"))
        with pytest.raises(LoginFailed):
            await rig.hsm.admin.login(rig.notify)
    assert rig.hsm.state.initialised


async def test_not_counted_wrong_colour_timeout_unplug(rig: Rig) -> None:
    await rig.init_hsm()
    rig.hsm.admin.logout()
    for _ in range(5):
        rig.ped.plan.append("red1")  # the red domain key offered for blue: refused
        with pytest.raises(LoginRefused, match="red"):
            await rig.hsm.admin.login(rig.notify)
        rig.ped.plan.append("timeout")
        with pytest.raises(PedUnavailable):
            await rig.hsm.admin.login(rig.notify)
        rig.ped.plan.append("unplug")
        with pytest.raises(PedUnavailable):
            await rig.hsm.admin.login(rig.notify)
    assert rig.store.get_role(HSM_SCOPE, "hsm-so").failures == 0
    assert rig.hsm.state.initialised


async def test_keyset_mismatch_counts(rig: Rig) -> None:
    await rig.init_partition("p1")
    rig.hsm.admin.logout()
    rig.ped.plan.append("p1-so")  # a blue key, but the partition SO's keyset
    with pytest.raises(LoginFailed, match="another keyset"):
        await rig.hsm.admin.login(rig.notify)
    assert rig.store.get_role(HSM_SCOPE, "hsm-so").failures == 1


async def test_interrupted_attempt_is_counted(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    await rig.init_hsm()
    rig.hsm.admin.logout()

    class PowerCut(BaseException):
        pass

    def cut(*args: object) -> None:
        raise PowerCut

    monkeypatch.setattr(logins_mod, "unwrap", cut)
    with pytest.raises(PowerCut):
        await rig.hsm.admin.login(rig.notify)
    monkeypatch.undo()
    rig.crash()
    assert rig.store.get_role(HSM_SCOPE, "hsm-so").failures == 1


async def test_threshold_reached_before_a_crash_is_applied_at_power_on(rig: Rig) -> None:
    await rig.init_hsm()
    with rig.store.tx():
        rig.store.update_role(HSM_SCOPE, "hsm-so", failures=3)  # outcome never ran
    rig.crash()
    assert not rig.hsm.state.initialised
    assert any("threshold" in n for n in rig.boot_notes)


# --- Partition SO: 10 -> partition zeroized -----------------------------------------


async def test_partition_so_ten_failures_zeroize_the_partition(rig: Rig) -> None:
    await rig.init_partition("p1")
    await rig.init_partition("p2")
    await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    rig.hsm.objects.create("p1", "k1", b"v1")
    await rig.hsm.roles.login(rig.notify, "p2", "co", None)
    rig.hsm.objects.create("p2", "k2", b"v2")
    for n in range(1, 10):
        rig.ped.plan.append(("pin", "p1-so"))
        with pytest.raises(LoginFailed, match=f"{n} consecutive failure"):
            await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    rig.ped.plan.append(("pin", "p1-so"))
    with pytest.raises(Zeroized, match="partition 'p1' has been zeroized"):
        await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    shown = rig.hsm.partitions.show("p1")
    assert not shown["initialised"]
    assert shown["objects"] == 0
    assert rig.hsm.partitions.show("p2")["objects"] == 1  # the other partition is untouched
    assert rig.hsm.state.initialised


# --- Auditor: 10 -> locked 10 minutes -----------------------------------------------


async def test_auditor_locks_for_ten_minutes_then_unlocks(rig: Rig) -> None:
    await rig.init_hsm()
    rig.ped.plan.append("white")
    await rig.hsm.auditor.init(rig.notify, force=False)
    for _ in range(9):
        rig.ped.plan.append(("pin", "white"))
        with pytest.raises(LoginFailed):
            await rig.hsm.auditor.login(rig.notify)
    rig.ped.plan.append(("pin", "white"))
    with pytest.raises(LockedOut, match="10 minutes"):
        await rig.hsm.auditor.login(rig.notify)
    reads = rig.ped.reads
    rig.clock.advance(599)
    with pytest.raises(LockedOut, match="unlocks by itself in 1 s"):
        await rig.hsm.auditor.login(rig.notify)  # the right key, still locked
    assert rig.ped.reads == reads  # refused before the PED is asked
    rig.power_cycle()  # a restart does not end the lock early, nor add attempts
    with pytest.raises(LockedOut):
        await rig.hsm.auditor.login(rig.notify)
    rig.clock.advance(1)
    await rig.hsm.auditor.login(rig.notify)
    assert rig.store.get_role(HSM_SCOPE, "auditor").failures == 0


# --- Crypto Officer: 10 (lowerable), policy 15 off / on ------------------------------


async def _fail_co(rig: Rig, times: int, name: str = "p1") -> None:
    for _ in range(times):
        rig.ped.plan.append(("pin", f"{name}-co"))
        with pytest.raises(LoginFailed):
            await rig.hsm.roles.login(rig.notify, name, "co", None)


async def test_co_policy15_off_locks_permanently_and_destroys_access(rig: Rig) -> None:
    await rig.init_partition("p1", with_cu=True)
    rig.hsm.objects.create("p1", "k1", b"secret object")
    await _fail_co(rig, 9)
    rig.ped.plan.append(("pin", "p1-co"))
    with pytest.raises(LockedOut, match="permanently locked"):
        await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    with pytest.raises(LockedOut, match="permanently"):
        await rig.hsm.roles.login(rig.notify, "p1", "co", None)  # even the right key
    with pytest.raises(LockedOut):
        await rig.hsm.roles.login(rig.notify, "p1", "cu", None)
    assert rig.store.get_role("p1", "co").wrapped == b""  # the data key is gone
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    with pytest.raises(PolicyError, match="policy 15"):
        await rig.hsm.roles.resetpw(rig.notify, "p1", "co", None)


async def test_co_policy15_on_locks_until_partition_so_resets(rig: Rig) -> None:
    await rig.init_hsm()
    rig.hsm.admin.changepolicy(15, 1, force=True)
    await rig.init_hsm()
    await rig.init_partition("p1", with_cu=True)
    rig.hsm.objects.create("p1", "k1", b"kept object")
    rig.hsm.roles.logout("p1")
    await _fail_co(rig, 9)
    rig.ped.plan.append(("pin", "p1-co"))
    with pytest.raises(LockedOut, match="resetpw"):
        await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    with pytest.raises(LockedOut, match="resetpw"):
        await rig.hsm.roles.login(rig.notify, "p1", "cu", None)
    with pytest.raises(LockedOut):
        await rig.hsm.roles.login(rig.notify, "p1", "co", CHAL)
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    rig.ped.plan.append("p1-co-new")
    out = await rig.hsm.roles.resetpw(rig.notify, "p1", "co", b"new challenge")
    assert "unlocked" in out
    await rig.hsm.roles.login(rig.notify, "p1", "co", b"new challenge")
    assert [o["label"] for o in rig.hsm.objects.list_objects("p1")] == ["k1"]
    await rig.hsm.roles.login(rig.notify, "p1", "cu", None)  # CU unlocked too
    assert rig.hsm.objects.list_objects("p1")[0]["size"] == len(b"kept object")


async def test_co_threshold_can_be_lowered_by_partition_policy_20(rig: Rig) -> None:
    await rig.init_partition("p1")
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    with pytest.raises(PolicyError, match="from 1 to 10"):
        rig.hsm.partitions.changepolicy("p1", 20, 11)
    rig.hsm.partitions.changepolicy("p1", 20, 2)
    await _fail_co(rig, 1)
    rig.ped.plan.append(("pin", "p1-co"))
    with pytest.raises(LockedOut, match="2 times in a row"):
        await rig.hsm.roles.login(rig.notify, "p1", "co", None)


async def test_wrong_challenge_counts(rig: Rig) -> None:
    await rig.init_partition("p1")
    with pytest.raises(LoginFailed, match="challenge"):
        await rig.hsm.roles.login(rig.notify, "p1", "co", b"not the challenge")
    assert rig.store.get_role("p1", "co").failures == 1
    await rig.hsm.roles.login(rig.notify, "p1", "co", CHAL)
    assert rig.store.get_role("p1", "co").failures == 0


# --- Policy 15 is destructive ----------------------------------------------------------


async def test_changing_policy_15_needs_confirmation_and_zeroizes(rig: Rig) -> None:
    await rig.init_partition("p1")
    with pytest.raises(ConfirmationRequired, match="ZEROIZES"):
        rig.hsm.admin.changepolicy(15, 1, force=False)
    assert rig.hsm.state.initialised
    assert rig.hsm.admin.showpolicies()[0]["value"] == 0
    out = rig.hsm.admin.changepolicy(15, 1, force=True)
    assert "zeroized" in out
    assert not rig.hsm.state.initialised
    assert rig.hsm.admin.show()["partitions"] == []
    assert rig.hsm.admin.showpolicies()[0]["value"] == 1  # the policy survives its zeroize
    await rig.init_hsm()
    assert "already 1" in rig.hsm.admin.changepolicy(15, 1, force=False)


# --- the caution before the attempt that locks out or zeroizes (Luna's habit) ----------


async def test_the_last_attempt_is_announced_before_the_ped_is_asked(rig: Rig) -> None:
    await rig.init_partition("p1")
    rig.hsm.admin.logout()
    for _ in range(2):
        rig.ped.plan.append(("pin", "blue0"))
        with pytest.raises(LoginFailed):
            await rig.hsm.admin.login(rig.notify)
    assert not [n for n in rig.notes if n.startswith("Caution")]
    rig.notes.clear()
    await rig.hsm.admin.login(rig.notify)  # the right key: the caution came first all the same
    caution = "Caution: 1 HSM SO login attempt left; another failure zeroizes the HSM."
    assert rig.notes[0] == caution, rig.notes
    rig.notes.clear()
    await rig.hsm.admin.login(rig.notify)  # the count was reset: no caution
    assert not [n for n in rig.notes if n.startswith("Caution")]
    # the CO of a partition with the default 10 attempts, policy 15 off
    for _ in range(9):
        rig.ped.plan.append(("pin", "p1-co"))
        with pytest.raises(LoginFailed):
            await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    rig.notes.clear()
    rig.ped.plan.append(("pin", "p1-co"))
    with pytest.raises(LockedOut):
        await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    assert rig.notes[0] == (
        "Caution: 1 Crypto Officer of partition p1 login attempt left; another failure locks "
        "the Crypto Officer and Crypto User of partition p1 for good and makes its contents "
        "unreachable."
    ), rig.notes
