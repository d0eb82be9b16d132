"""Activation (policy 22), auto-activation (policy 23) across power cycles, tamper."""

from __future__ import annotations

import pytest

from hsm.errors import LoginFailed, NotLoggedIn, PolicyError
from tests.hsm.rig import CHAL, Rig


async def _activated(rig: Rig, *, auto: bool) -> None:
    await rig.init_partition("p1")
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    rig.hsm.partitions.changepolicy("p1", 22, 1)
    if auto:
        rig.hsm.partitions.changepolicy("p1", 23, 1)
    out = await rig.hsm.roles.activate(rig.notify, "p1", "co")
    assert "activated" in out
    rig.hsm.roles.logout(None)


async def test_activate_needs_policy_22(rig: Rig) -> None:
    await rig.init_partition("p1")
    with pytest.raises(PolicyError, match="policy 22"):
        await rig.hsm.roles.activate(rig.notify, "p1", "co")


async def test_activated_role_logs_in_with_the_challenge_alone(rig: Rig) -> None:
    await _activated(rig, auto=False)
    reads, notes = rig.ped.reads, len(rig.notes)
    await rig.hsm.roles.login(rig.notify, "p1", "co", CHAL)
    assert rig.ped.reads == reads  # the PED was not asked
    assert rig.notes[notes:] == []  # nor was anybody told to attend to it
    rig.hsm.objects.create("p1", "app-key", b"v")
    # a wrong challenge counts, even with the PED secret cached
    with pytest.raises(LoginFailed, match="wrong challenge secret"):
        await rig.hsm.roles.login(rig.notify, "p1", "co", b"guess")
    assert rig.store.get_role("p1", "co").failures == 1
    # deactivation: the PED is needed again
    rig.hsm.roles.deactivate("p1", "co")
    await rig.hsm.roles.login(rig.notify, "p1", "co", CHAL)
    assert rig.ped.reads == reads + 1


async def test_activation_is_lost_at_power_off(rig: Rig) -> None:
    await _activated(rig, auto=False)
    rig.power_cycle(off_for=5)
    reads = rig.ped.reads
    await rig.hsm.roles.login(rig.notify, "p1", "co", CHAL)
    assert rig.ped.reads == reads + 1
    assert not rig.store.activations()


@pytest.mark.parametrize(("off_for", "survives"), [(60, True), (7200, True), (7201, False)])
async def test_auto_activation_survives_at_most_two_hours_off(
    rig: Rig, off_for: float, survives: bool
) -> None:
    await _activated(rig, auto=True)
    rig.power_cycle(off_for=off_for)
    assert bool(rig.store.activations()) is survives
    if not survives:
        assert any("off too long" in n for n in rig.boot_notes)
    reads = rig.ped.reads
    await rig.hsm.roles.login(rig.notify, "p1", "co", CHAL)
    assert (rig.ped.reads == reads) is survives


async def test_auto_activation_after_a_crash_counts_from_the_last_heartbeat(rig: Rig) -> None:
    await _activated(rig, auto=True)
    rig.clock.advance(3000)
    rig.hsm.heartbeat()  # the daemon stamps while it runs
    rig.clock.advance(3000)  # then dies without a clean power off
    rig.crash()
    rig.clock.advance(0)
    reads = rig.ped.reads
    await rig.hsm.roles.login(rig.notify, "p1", "co", CHAL)
    assert rig.ped.reads == reads  # 3000 s off (from the last stamp): within two hours
    rig.clock.advance(7201)
    rig.crash()
    await rig.hsm.roles.login(rig.notify, "p1", "co", CHAL)
    assert rig.ped.reads == reads + 1


async def test_auto_activation_cache_is_sealed_on_disk(rig: Rig) -> None:
    await _activated(rig, auto=True)
    [(_, _, sealed, _)] = rig.store.activations()
    secret = rig.ped.keys["p1-co"].secret
    assert secret not in sealed
    for path in rig.home.iterdir():
        if path.is_file():
            assert secret not in path.read_bytes(), path.name


async def test_tamper_clears_the_activation_cache(rig: Rig) -> None:
    await _activated(rig, auto=True)
    rig.hsm.admin.tamper()
    assert not rig.store.activations()
    rig.power_cycle(off_for=1)
    reads = rig.ped.reads
    await rig.hsm.roles.login(rig.notify, "p1", "co", CHAL)
    assert rig.ped.reads == reads + 1
    assert rig.hsm.state.audit.records()[-3]["event"] in {"tamper", "power off", "power on"}


async def test_turning_policy_22_off_deactivates(rig: Rig) -> None:
    await _activated(rig, auto=True)
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    rig.hsm.partitions.changepolicy("p1", 22, 0)
    assert not rig.store.activations()
    reads = rig.ped.reads
    await rig.hsm.roles.login(rig.notify, "p1", "co", CHAL)
    assert rig.ped.reads == reads + 1


async def test_objects_need_a_logged_in_owner(rig: Rig) -> None:
    await rig.init_partition("p1")
    with pytest.raises(NotLoggedIn, match="role login --partition p1 --name co"):
        rig.hsm.objects.create("p1", "k", b"v")
