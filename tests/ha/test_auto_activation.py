"""HA members must be activated with auto-activation (policy 23): pedhsm says so in its
partition info (client protocol version 2), hagroup refuses a member without it, warns
when a version-1 pedhsm cannot say, and listgroups shows it per member."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

import hsm.ntlsd
from hsmclient.ha import config as ha_config
from hsmclient.ha.control import member_rows, resolve_member
from ped.ntls import messages as m
from ped.ntls.connection import choose_version
from tests.ha.rig import CHALLENGE, Trio3, auto_activation_on, three_hsms
from tests.hsm.rig import Rig
from tests.hsm.test_clients_rig import CLIENT, activated, register
from tests.pedserver.fakes import short_tmp


def _autos(listed: dict[str, object]) -> dict[str, str]:
    groups = listed["groups"]
    assert isinstance(groups, list)
    return {row["server"]: row["auto_activation"] for row in groups[0]["members"]}


async def test_pedhsm_says_whether_the_role_stays_activated(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        await activated(rig, "p1")  # policy 22 only: activated until the next restart
        register(rig, CLIENT, "p1")
        access = rig.hsm.client_access(CLIENT)
        [info] = access.partitions()
        assert info.activated and not info.auto_activation
        await auto_activation_on(rig)  # policy 23, then activated again: sealed
        [info] = access.partitions()
        assert info.activated and info.auto_activation
        await rig.hsm.roles.login(rig.notify, "p1", "so", None)
        rig.hsm.partitions.changepolicy("p1", 23, 0)  # drops the sealed copy
        rig.hsm.roles.logout(None)
        [info] = access.partitions()
        assert info.activated and not info.auto_activation
    finally:
        rig.store.close()


async def test_a_member_without_auto_activation_is_refused_naming_the_fix(
    tmp_path: Path,
) -> None:
    with short_tmp() as home:
        async with three_hsms(tmp_path, home, auto=(True, False, True)) as t:
            said = await t.ha("creategroup", label="ha1", slot=t.slot("hsm2"),
                              password=CHALLENGE)  # fmt: skip
            ref = resolve_member(t.backend.slot_map, {"slot": t.slot("hsm2")})
            assert str(ref) in said["error"] and "without auto-activation" in said["error"]
            assert not t.backend.config.groups
            said = await t.ha("creategroup", label="ha1", slot=t.slot("hsm1"),
                              password=CHALLENGE)  # fmt: skip
            assert "error" not in said and not any("warning" in s for s in said["said"])
            said = await t.ha("addmember", group="ha1", slot=t.slot("hsm2"), password=CHALLENGE)
            error = said["error"]
            assert error.startswith(f"{ref} (slot {t.slot('hsm2')}) is activated without")
            assert ("`pedhsm partition changepolicy --name p1 --policy 23 --value 1`, then "
                    "`pedhsm role activate --partition p1 --name co` again") in error
            assert CHALLENGE not in error
            assert t.backend.config.group("ha1").members == (
                resolve_member(t.backend.slot_map, {"slot": t.slot("hsm1")}),)
            said = await t.ha("addmember", group="ha1", slot=t.slot("hsm3"), password=CHALLENGE)
            assert "error" not in said, said
            await _force_in(t, home, "hsm2")
            listed = await t.ha("listgroups")
            assert _autos(listed) == {"hsm1": "on", "hsm3": "on", "hsm2": "off"}
            text = "\n".join(member_rows(listed["groups"]))
            assert text.count("auto-activation: on") == 2
            assert text.count("auto-activation: off") == 1
            t.kill("hsm3")
            assert _autos(await t.ha("listgroups"))["hsm3"] == "unknown"  # no answer


async def _force_in(t: Trio3, home: Path, name: str) -> None:
    group = t.backend.config.group("ha1")
    ref = resolve_member(t.backend.slot_map, {"slot": t.slot(name)})
    ha_config.save(home, t.backend.config.replace(
        attrs.evolve(group, members=(*group.members, ref))))  # fmt: skip
    await t.ha("reload")


async def test_a_version_1_pedhsm_gets_a_warning_not_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def version_1_pedhsm(hello: m.Hello) -> int | None:
        return choose_version(attrs.evolve(hello, version_max=1))

    monkeypatch.setattr(hsm.ntlsd, "choose_version", version_1_pedhsm)
    with short_tmp() as home:
        async with three_hsms(tmp_path, home, auto=(False, False, False)) as t:
            said = await t.ha("creategroup", label="ha1", slot=t.slot("hsm1"),
                              password=CHALLENGE)  # fmt: skip
            assert "error" not in said, said
            [created, warning] = said["said"]
            assert created.startswith("HA group ha1 created")
            assert warning.startswith("warning: ") and "client protocol version 1" in warning
            assert "pedhsm partition showpolicies --name p1" in warning
            said = await t.ha("addmember", group="ha1", slot=t.slot("hsm2"), password=CHALLENGE)
            assert "error" not in said and said["said"][-1].startswith("warning: "), said
            listed = await t.ha("listgroups")
            assert _autos(listed) == {"hsm1": "unknown", "hsm2": "unknown"}
