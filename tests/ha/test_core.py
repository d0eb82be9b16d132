"""The sans-IO core of HA groups: member states, the handle map, the replication plan and
the configuration file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hsmclient.ha import config as ha_config
from hsmclient.ha.config import HaConfig, HaConfigError, HaGroup, MemberRef, group_serial
from hsmclient.ha.control import edit
from hsmclient.ha.handles import HandleMap, ObjectKey, with_group_id
from hsmclient.ha.members import GroupState, MemberState
from hsmclient.ha.plan import BATCH, sync_plan
from hsmclient.slots import SlotMap
from ped.pkcs11.constants import CKA, CKO
from ped.pkcs11.token import Attribute, AttributeResult

A, B, C = MemberRef("hsm1", "1001"), MemberRef("hsm2", "2001"), MemberRef("hsm3", "3001")


def test_operations_rotate_over_the_members_in_use_and_skip_the_failed() -> None:
    g = GroupState([A, B, C], now=1.0)
    firsts = [g.order()[0] for _ in range(6)]
    assert firsts == [A, B, C, A, B, C]
    assert g.order() == [A, B, C]  # each call may fail over to every other member
    assert g.failed(B, "connection reset", now=5.0)
    assert not g.failed(B, "again", now=6.0)  # already down: since and why are kept
    s = g.status(B)
    assert (s.state, s.since, s.why) == (MemberState.DOWN, 5.0, "connection reset")
    assert B not in g.order() and len(g.in_use()) == 2


def test_a_member_back_needs_sync_before_it_serves_and_retries_are_counted() -> None:
    g = GroupState([A, B], now=1.0)
    g.failed(B, "gone", now=2.0)
    assert g.due(0) == []  # retry 0: never by itself (seed 003)
    assert g.due(2) == [B]
    g.attempted(B)
    g.attempted(B)
    assert g.due(2) == []  # the attempts are used up
    g.reachable(B, now=9.0)
    assert g.status(B).state is MemberState.ALIVE and g.status(B).needs_sync
    assert g.in_use() == [A] and g.pending() == [B] and g.alive() == [A, B]
    g.synced(B, now=10.0)
    assert g.in_use() == [A, B] and g.status(B).attempts == 0


def test_an_excluded_member_is_out_until_recovered_and_new_members_need_sync() -> None:
    g = GroupState([A], now=1.0)
    assert g.in_use() == [A]  # the first member is the group: nothing to sync from
    g.set_members([A, B], now=2.0)
    assert g.status(B).needs_sync and g.in_use() == [A]
    g.excluded(B, "conflicting settings for private key cloning", now=3.0)
    assert g.status(B).state is MemberState.EXCLUDED and g.due(5) == []


def test_the_handle_map_gives_one_virtual_handle_per_object_across_members() -> None:
    key = ObjectKey(CKO.PRIVATE_KEY, b"k", b"\x01" * 16)
    other = ObjectKey(CKO.PUBLIC_KEY, b"k", b"\x01" * 16)
    hmap = HandleMap()
    v = hmap.virtual(key, A, 7)
    assert hmap.virtual(key, B, 42) == v  # the same object on another member
    assert hmap.virtual(other, A, 8) != v
    assert (hmap.on(v, A), hmap.on(v, B), hmap.on(v, C)) == (7, 42, None)
    assert hmap.needs_lookup(v, C) and not hmap.needs_lookup(v, A)
    assert hmap.known(B, 42) == v and hmap.known(B, 7) is None
    hmap.forget_member(B)  # B went down: it may come back reset, with other handles
    assert hmap.on(v, B) is None and hmap.key(v) == key
    hmap.forget(v)
    assert hmap.key(v) is None and "k" not in repr(hmap)


def test_object_keys_come_from_attributes_and_templates_get_a_group_id() -> None:
    results = [AttributeResult(CKA.CLASS, CKO.SECRET_KEY), AttributeResult(CKA.LABEL, b"x"),
               AttributeResult(CKA.ID, None, rv=0x12)]  # fmt: skip
    key = ObjectKey.from_results(results)
    assert key == ObjectKey(CKO.SECRET_KEY, b"x", b"")
    assert [a.type for a in key.template()] == [CKA.CLASS, CKA.LABEL, CKA.ID]
    given = [Attribute(CKA.LABEL, b"x"), Attribute(CKA.ID, b"mine")]
    assert with_group_id(given, b"g" * 16) == given  # the application's id is kept
    added = with_group_id([Attribute(CKA.LABEL, b"x")], b"g" * 16)
    assert added[-1] == Attribute(CKA.ID, b"g" * 16)


def test_the_sync_plan_clones_what_is_missing_and_destroys_what_is_gone() -> None:
    k1, k2, k3 = (ObjectKey(CKO.PRIVATE_KEY, b"k", bytes([i])) for i in (1, 2, 3))
    reference = [(k1, 10), (k2, 11), (k2, 12)]  # two objects share k2
    member = [(k2, 20), (k3, 21)]  # k1 was made meanwhile, k3 destroyed meanwhile
    plan = sync_plan(reference, member)
    assert set(plan.clone) == {10, 12} and plan.destroy == (21,)
    assert sync_plan(reference, [(k1, 1), (k2, 2), (k2, 3)]).empty
    big = sync_plan([(ObjectKey(1, b"", bytes([i])), i) for i in range(BATCH + 3)], [])
    assert [len(b) for b in big.batches()] == [BATCH, 3]


def test_the_configuration_is_written_owner_only_and_read_back(tmp_path: Path) -> None:
    group = HaGroup("ha1", group_serial(A), (A, B), retry=3, synchronize=False)
    assert group.serial == "11001"  # Luna: 1 and the first member's serial
    ha_config.save(tmp_path, HaConfig((group,), interval=5))
    path = tmp_path / ha_config.CONFIG_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ha_config.load(tmp_path) == HaConfig((group,), interval=5)
    assert ha_config.load(tmp_path / "none") == HaConfig()
    path.write_text("{not json")
    with pytest.raises(HaConfigError, match="cannot read the HA groups"):
        ha_config.load(tmp_path)


def test_config_edits_check_their_values_and_name_the_fix(tmp_path: Path) -> None:
    slots = SlotMap(tmp_path)
    slots.slot_for(A.server, A.serial)
    slot_b = slots.slot_for(B.server, B.serial)
    config = HaConfig((HaGroup("ha1", "1", (A, B)),))
    config, said = edit(config, slots, "retry", {"group": "ha1", "count": 3})
    assert config.group("ha1").retry == 3 and "automatic recovery on" in said
    with pytest.raises(HaConfigError, match="0 to 500"):
        edit(config, slots, "retry", {"group": "ha1", "count": -1})
    with pytest.raises(HaConfigError, match="1 to 1200"):
        edit(config, slots, "interval", {"interval": 0})
    config, _ = edit(config, slots, "synchronize", {"group": "ha1", "enable": False})
    assert not config.group("ha1").synchronize
    config, _ = edit(config, slots, "removemember", {"group": "ha1", "slot": slot_b})
    assert config.group("ha1").members == (A,)
    with pytest.raises(HaConfigError, match="deletegroup"):
        edit(config, slots, "removemember", {"group": "ha1", "serialnumber": A.serial})
    with pytest.raises(HaConfigError, match="no HA group 'nope'"):
        edit(config, slots, "retry", {"group": "nope", "count": 1})
    config, _ = edit(config, slots, "deletegroup", {"label": "ha1"})
    assert config.groups == ()
