"""An HA group's virtual slot over three in-process HSMs: replication, load balancing,
failover inside one call, recovery of a member, and the refusals of its prerequisites."""

from __future__ import annotations

import hashlib
from pathlib import Path

import attrs
import pytest

from hsmclient.ha import config as ha_config
from hsmclient.ha.control import resolve_member
from hsmclient.ha.members import MemberState
from hsmclient.ha.slot import HaApplication
from ped.pkcs11.constants import CKA, CKM, CKR, CKU
from ped.pkcs11.token import Attribute, Mechanism, Pkcs11Error
from tests.ha.rig import CHALLENGE, EC_PRIV, EC_PUB, Trio3, three_hsms
from tests.pedserver.fakes import short_tmp

DIGEST = hashlib.sha256(b"one slot, three HSMs").digest()


async def _group(t: Trio3, *members: str) -> int:
    said = await t.ha("creategroup", label="ha1", slot=t.slot("hsm1"), password=CHALLENGE)
    assert "error" not in said, said
    for name in members:
        said = await t.ha("addmember", group="ha1", slot=t.slot(name), password=CHALLENGE)
        assert "error" not in said, said
    [(_, slot)] = t.backend.group_slots()
    return slot


async def _session(t: Trio3, slot: int) -> tuple[HaApplication, int]:
    app = await t.backend.connect()
    session = await app.open_session(slot, True)
    await app.login(session, CKU.USER, bytearray(CHALLENGE.encode()))
    return app, session


async def _sign_key(app: HaApplication, session: int) -> tuple[int, int]:
    pub, priv = await app.generate_key_pair(session, Mechanism(CKM.EC_KEY_PAIR_GEN),
                                            EC_PUB, EC_PRIV)  # fmt: skip
    return pub, priv


async def test_a_key_made_through_the_group_is_on_every_member_and_signs_on_each(
    tmp_path: Path,
) -> None:
    with short_tmp() as home:
        async with three_hsms(tmp_path, home) as t:
            slot = await _group(t, "hsm2", "hsm3")
            app, session = await _session(t, slot)
            slots = await app.slots()
            assert any(s.slot_id == slot and "HA group ha1" in s.description for s in slots)
            assert (await app.token_info(slot)).label == "ha1"
            pub, priv = await _sign_key(app, session)
            assert [t.count(n) for n in ("hsm1", "hsm2", "hsm3")] == [2, 2, 2]
            for _ in range(6):
                signature = await app.sign(session, Mechanism(CKM.ECDSA), priv, DIGEST)
                await app.verify(session, Mechanism(CKM.ECDSA), pub, DIGEST, signature)
            found = await app.find_objects(session, [Attribute(CKA.LABEL, b"ha-key")])
            assert sorted(found) == sorted([pub, priv])
            # the group object id: one CKA_ID on both halves, the same on every member
            [ident] = await app.get_attributes(session, priv, [CKA.ID])
            assert isinstance(ident.value, bytes) and len(ident.value) == 16
            await app.close()


async def test_signing_goes_on_through_two_member_deaths_and_recovery_resyncs(
    tmp_path: Path,
) -> None:
    with short_tmp() as home:
        async with three_hsms(tmp_path, home) as t:
            slot = await _group(t, "hsm2", "hsm3")
            app, session = await _session(t, slot)
            pub, priv = await _sign_key(app, session)
            signed = 0
            for victim in ("hsm2", "hsm1"):
                t.kill(victim)
                for _ in range(6):  # every member's turn comes: no call fails
                    sig = await app.sign(session, Mechanism(CKM.ECDSA), priv, DIGEST)
                    await app.verify(session, Mechanism(CKM.ECDSA), pub, DIGEST, sig)
                    signed += 1
            assert signed == 12
            state = t.backend.state("ha1")
            down = {ref.server: s for ref, s in state.members.items()
                    if s.state is MemberState.DOWN}  # fmt: skip
            assert set(down) == {"hsm1", "hsm2"} and all(s.why and s.since for s in
                                                          down.values())  # fmt: skip
            # while two are down: a new key, and the first one destroyed
            _, priv2 = await _sign_key(app, session)
            await app.destroy_object(session, pub)
            await app.destroy_object(session, priv)
            assert t.count("hsm3") == 2 and t.count("hsm1") == 2
            # retry 0 (the default): coming back is not enough
            await t.revive("hsm1")
            await t.revive("hsm2")
            assert len(state.in_use()) == 1
            listed = await t.ha("listgroups")
            rows = {m["server"]: m for m in listed["groups"][0]["members"]}
            assert rows["hsm1"]["state"] == "down" and rows["hsm3"]["state"] == "alive"
            said = await t.ha("recover", group="ha1")  # the app's login is held: synced
            assert len(state.in_use()) == 3, said
            assert [t.count(n) for n in ("hsm1", "hsm2", "hsm3")] == [2, 2, 2]
            for _ in range(3):
                await app.sign(session, Mechanism(CKM.ECDSA), priv2, DIGEST)
            await app.close()


async def test_the_last_member_down_is_an_error_naming_the_group(tmp_path: Path) -> None:
    with short_tmp() as home:
        async with three_hsms(tmp_path, home) as t:
            slot = await _group(t, "hsm2")
            app, session = await _session(t, slot)
            _, priv = await _sign_key(app, session)
            t.kill("hsm1")
            t.kill("hsm2")
            with pytest.raises(Pkcs11Error) as caught:
                await app.sign(session, Mechanism(CKM.ECDSA), priv, DIGEST)
            assert caught.value.rv == CKR.DEVICE_REMOVED
            assert "HA group ha1: no member left in use" in str(caught.value)
            await app.close()


async def test_a_member_of_another_domain_is_refused_with_seed_003s_words(
    tmp_path: Path,
) -> None:
    with short_tmp() as home:
        async with three_hsms(tmp_path, home, same_domain=(True, False)) as t:
            await _group(t, "hsm2")
            said = await t.ha("addmember", group="ha1", slot=t.slot("hsm3"),
                              password=CHALLENGE)  # fmt: skip
            error = said["error"]
            assert "conflicting settings for private key cloning" in error
            assert f"slot {t.slot('hsm3')}" in error and "--domain-from-red-key" in error
            assert CHALLENGE not in error
            assert t.count("hsm3") == 0
            members = t.backend.config.group("ha1").members
            assert [m.server for m in members] == ["hsm1", "hsm2"]


async def test_a_member_reinitialised_in_another_domain_is_excluded_and_listed_why(
    tmp_path: Path,
) -> None:
    """A member that changed domain after joining: replication leaves it out, says why."""
    with short_tmp() as home:
        async with three_hsms(tmp_path, home, same_domain=(True, False)) as t:
            slot = await _group(t, "hsm2")
            # hsm3 forced into the group's configuration (as if re-initialised since)
            group = t.backend.config.group("ha1")
            ref = resolve_member(t.backend.slot_map, {"slot": t.slot("hsm3")})
            ha_config.save(home, t.backend.config.replace(
                attrs.evolve(group, members=(*group.members, ref))))
            await t.ha("reload")
            said = await t.ha("synchronize", group="ha1", enable=True, password=CHALLENGE)
            warning = " ".join(said["said"])
            assert "Warning: Synchronize may fail. The members in slot" in warning
            assert "have conflicting settings for private key cloning" in warning
            assert "removemember" in warning and CHALLENGE not in warning
            assert t.backend.state("ha1").status(ref).state is MemberState.EXCLUDED
            t.backend.state("ha1").synced(ref, 1.0)  # as if it had been in use meanwhile
            app, session = await _session(t, slot)
            await _sign_key(app, session)
            assert [t.count(n) for n in ("hsm1", "hsm2", "hsm3")] == [2, 2, 0]
            status = t.backend.state("ha1").status(ref)
            assert status.state is MemberState.EXCLUDED
            assert "conflicting settings for private key cloning" in status.why
            listed = await t.ha("listgroups")
            row = next(m for m in listed["groups"][0]["members"] if m["server"] == "hsm3")
            assert row["state"] == "excluded" and "private key cloning" in row["why"]
            await app.close()


async def test_a_wrong_challenge_and_a_role_not_activated_are_refused(tmp_path: Path) -> None:
    with short_tmp() as home:
        async with three_hsms(tmp_path, home, activate=(True, False)) as t:
            said = await t.ha("creategroup", label="ha1", slot=t.slot("hsm1"),
                              password="not the challenge")  # fmt: skip
            assert "challenge is wrong" in said["error"] and "not the challenge" not in said[
                "error"]  # fmt: skip
            assert not t.backend.config.groups
            await _group(t)
            said = await t.ha("addmember", group="ha1", slot=t.slot("hsm3"), password=CHALLENGE)
            assert "is not activated" in said["error"] and "role activate" in said["error"]


async def test_a_dropped_connection_is_dialled_again_not_taken_for_a_dead_member(
    tmp_path: Path,
) -> None:
    """pedhsm closes idle connections: the member is tried once more on a new one."""
    with short_tmp() as home:
        async with three_hsms(tmp_path, home) as t:
            slot = await _group(t, "hsm2", "hsm3")
            app, session = await _session(t, slot)
            pub, priv = await _sign_key(app, session)
            for link in list(app.links.values()):
                await link.aclose()  # every member's connection gone at once
            for _ in range(3):
                sig = await app.sign(session, Mechanism(CKM.ECDSA), priv, DIGEST)
                await app.verify(session, Mechanism(CKM.ECDSA), pub, DIGEST, sig)
            assert len(t.backend.state("ha1").in_use()) == 3
            await app.close()


async def test_a_deleted_group_takes_its_slot_away_and_leaves_the_keys(tmp_path: Path) -> None:
    with short_tmp() as home:
        async with three_hsms(tmp_path, home) as t:
            slot = await _group(t, "hsm2")
            app, session = await _session(t, slot)
            await _sign_key(app, session)
            await app.close()
            said = await t.ha("deletegroup", label="ha1")
            assert said == {"said": ["HA group ha1 deleted"]}
            assert t.backend.group_at(slot) is None and t.backend.slot_map.where(slot) is None
            app = await t.backend.connect()
            assert slot not in [s.slot_id for s in await app.slots()]
            await app.close()
            assert [t.count(n) for n in ("hsm1", "hsm2")] == [2, 2]
            assert (home / "hagroups.json").stat().st_mode & 0o077 == 0


async def test_member_slots_keep_working_as_plain_slots_beside_the_group(
    tmp_path: Path,
) -> None:
    with short_tmp() as home:
        async with three_hsms(tmp_path, home) as t:
            await _group(t, "hsm2")
            app = await t.backend.connect()
            session = await app.open_session(t.slot("hsm3"), True)  # not in the group
            await app.login(session, CKU.USER, bytearray(CHALLENGE.encode()))
            pub, priv = await _sign_key(app, session)
            secret = await app.generate_key(session, Mechanism(CKM.AES_KEY_GEN), [
                Attribute(CKA.TOKEN, True), Attribute(CKA.VALUE_LEN, 32)])
            sig = await app.sign(session, Mechanism(CKM.ECDSA), priv, DIGEST)
            await app.verify(session, Mechanism(CKM.ECDSA), pub, DIGEST, sig)
            assert secret and [t.count(n) for n in ("hsm1", "hsm2", "hsm3")] == [0, 0, 3]
            await app.close()


async def test_a_member_added_later_receives_the_groups_keys(tmp_path: Path) -> None:
    """As a member zeroized and initialised again rejoins: a new member, keys replicated."""
    with short_tmp() as home:
        async with three_hsms(tmp_path, home) as t:
            slot = await _group(t, "hsm2")
            app, session = await _session(t, slot)
            pub, priv = await _sign_key(app, session)
            said = await t.ha("addmember", group="ha1", slot=t.slot("hsm3"), password=CHALLENGE)
            assert any("2 objects cloned to it" in line for line in said["said"]), said
            assert [t.count(n) for n in ("hsm1", "hsm2", "hsm3")] == [2, 2, 2]
            assert len(t.backend.state("ha1").in_use()) == 3
            for _ in range(3):  # hsm3 takes its turn with the replicated key
                sig = await app.sign(session, Mechanism(CKM.ECDSA), priv, DIGEST)
                await app.verify(session, Mechanism(CKM.ECDSA), pub, DIGEST, sig)
            await app.close()


async def test_a_second_session_stays_logged_in_when_the_first_one_closes(
    tmp_path: Path,
) -> None:
    """pedhsm logs a partition out when its last session closes: the group logs the
    member in again for the session still open (PKCS#11: the login lasts while one does)."""
    with short_tmp() as home:
        async with three_hsms(tmp_path, home) as t:
            slot = await _group(t, "hsm2")
            app, first = await _session(t, slot)
            _, priv = await _sign_key(app, first)
            second = await app.open_session(slot, True)  # no member session yet
            await app.close_session(first)
            for _ in range(2):
                await app.sign(second, Mechanism(CKM.ECDSA), priv, DIGEST)
            assert (await app.session_info(second)).state == 3  # CKS_RW_USER_FUNCTIONS
            await app.close()


async def test_a_member_that_refuses_the_login_others_accept_is_left_out_not_the_app(
    tmp_path: Path,
) -> None:
    with short_tmp() as home:
        async with three_hsms(tmp_path, home, activate=(True, False)) as t:
            slot = await _group(t, "hsm2")
            group = t.backend.config.group("ha1")  # hsm3 (not activated) forced in
            ref = resolve_member(t.backend.slot_map, {"slot": t.slot("hsm3")})
            ha_config.save(home, t.backend.config.replace(
                attrs.evolve(group, members=(*group.members, ref))))
            await t.ha("reload")
            t.backend.state("ha1").synced(ref, 1.0)
            app, session = await _session(t, slot)  # no error for the application
            status = t.backend.state("ha1").status(ref)
            assert status.state is MemberState.DOWN and "USER_PIN_NOT_INITIALIZED" in status.why
            _, priv = await _sign_key(app, session)
            for _ in range(3):
                await app.sign(session, Mechanism(CKM.ECDSA), priv, DIGEST)
            assert [t.count(n) for n in ("hsm1", "hsm2", "hsm3")] == [2, 2, 0]
            await app.close()
