"""Backup and restore through a Backup HSM, end to end in-process: the relay sees no key,
another domain is refused before anything moves, --add / --replace, list, delete, and the
refusals (no CO login, the Backup HSM's SO not logged in, a slot that is not one)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from hsm.errors import InvalidCommand
from hsm.token.vault import SessionObjects, Vault
from hsmclient.commands_archive import archive_list, backup, delete, restore
from ped.ntls.messages import ArchiveMode
from ped.pkcs11.constants import CKA, CKM, CKR
from ped.pkcs11.token import Attribute, Mechanism, Pkcs11Error
from tests.backup.rig import Site, site

DIGEST = hashlib.sha256(b"backed up and still signing").digest()


def pair_templates(label: str) -> tuple[list[Attribute], list[Attribute]]:
    pub = [Attribute(CKA.TOKEN, True), Attribute(CKA.LABEL, label.encode()),
           Attribute(CKA.EC_PARAMS, bytes.fromhex("06082a8648ce3d030107")),
           Attribute(CKA.VERIFY, True)]  # fmt: skip
    priv = [Attribute(CKA.TOKEN, True), Attribute(CKA.LABEL, label.encode()),
            Attribute(CKA.PRIVATE, True), Attribute(CKA.SENSITIVE, True),
            Attribute(CKA.SIGN, True)]  # fmt: skip
    return pub, priv


async def make_keys(s: Site, session: int, count: int, prefix: str = "key") -> list[str]:
    labels = [f"{prefix}-{i:03d}" for i in range(count)]
    for label in labels:
        await s.app.generate_key_pair(session, Mechanism(CKM.EC_KEY_PAIR_GEN),
                                      *pair_templates(label))  # fmt: skip
    return labels


async def signs(s: Site, session: int, label: str) -> bytes:
    found = await s.app.find_objects(session, [Attribute(CKA.LABEL, label.encode()),
                                               Attribute(CKA.SIGN, True)])  # fmt: skip
    assert len(found) == 1, f"{label}: {len(found)} signing keys"
    return await s.app.sign(session, Mechanism(CKM.ECDSA), found[0], DIGEST)


async def verifies(s: Site, session: int, label: str, signature: bytes) -> None:
    found = await s.app.find_objects(session, [Attribute(CKA.LABEL, label.encode()),
                                               Attribute(CKA.VERIFY, True)])  # fmt: skip
    await s.app.verify(session, Mechanism(CKM.ECDSA), found[0], DIGEST, signature)


def key_values(s: Site) -> list[bytes]:
    """Every private value of the source's p1 (the CO's data key of its first connection)."""
    access = s.accesses["hsm1"][0]
    data_key = next(iter(access._logged.values()))[1]
    vault = Vault(s.source.hsm.state, "p1", SessionObjects())
    values = [bytes(vault.key_value(h, data_key)) for h, _ in s.source.store.token_objects("p1")]
    return [v for v in values if v]


async def test_backup_and_restore_move_keys_the_relay_never_sees(tmp_path: Path) -> None:
    async with site(tmp_path) as s:
        src, dst, admin = await s.co_session("hsm1"), await s.co_session("hsm2"), await s.admin()
        labels = await make_keys(s, src, 3)
        s.backup.ped.keys["source-red"] = s.source.ped.keys["p1-dom"]
        s.backup.ped.plan.append("source-red")  # the domain's injection on hsm3's PED
        hops: list[bytes] = []
        row = await backup(s.app, src, admin, "nightly", tap=hops.append)
        assert row["objects"] == 6 and row["source_serial"] == s.app.session_serial(src)
        assert not s.backup.ped.plan
        await restore(s.app, admin, dst, "nightly", tap=hops.append)
        for label in labels:
            await verifies(s, src, label, await signs(s, dst, label))
        tapped = b"".join(hops)
        values = key_values(s)
        assert len(values) == 3
        assert not any(v in tapped for v in values)
        assert b"key-000" not in tapped  # the attributes travel sealed too
        # The Backup HSM's disk holds no value in the clear either.
        disk = (s.backup.home / "state.db").read_bytes()
        disk += (s.backup.home / "state.db-wal").read_bytes()
        assert not any(v in disk for v in values)
        # A second backup of the same domain: no red key asked for this time.
        await backup(s.app, src, admin, "weekly")
        listed = await archive_list(s.app, admin)
        assert [r["name"] for r in listed] == ["nightly", "weekly"]
        assert listed[0]["domain"] == listed[1]["domain"]


async def test_another_domain_is_refused_before_anything_moves(tmp_path: Path) -> None:
    async with site(tmp_path, target_same_domain=False) as s:
        src, dst, admin = await s.co_session("hsm1"), await s.co_session("hsm2"), await s.admin()
        await make_keys(s, src, 1)
        s.backup.ped.keys["source-red"] = s.source.ped.keys["p1-dom"]
        s.backup.ped.plan.append("source-red")
        await backup(s.app, src, admin, "nightly")
        hops: list[bytes] = []
        with pytest.raises(Pkcs11Error) as caught:
            await restore(s.app, admin, dst, "nightly", tap=hops.append)
        message = str(caught.value)
        assert caught.value.rv == CKR.FUNCTION_FAILED
        assert "different cloning domains" in message and "--domain-from-red-key" in message
        row = (await archive_list(s.app, admin))[0]
        assert row["domain"] in message
        assert len(hops) == 2  # CLONE_INIT, CLONE_REFUSED: no object moved
        assert s.target.store.token_objects("p1") == []
        # A backup of the other domain into that backup partition is refused the same way.
        hops.clear()
        with pytest.raises(Pkcs11Error, match="different cloning domains"):
            await backup(s.app, dst, admin, "nightly", ArchiveMode.REPLACE, tap=hops.append)
        assert len(hops) == 2
        assert (await archive_list(s.app, admin))[0]["objects"] == 2


async def test_a_red_key_of_another_domain_creates_no_backup_partition(tmp_path: Path) -> None:
    async with site(tmp_path) as s:
        src, admin = await s.co_session("hsm1"), await s.admin()
        await make_keys(s, src, 1)
        s.backup.ped.keys["wrong-red"] = s.target.ped.keys["p1-so"].__class__(
            s.source.ped.keys["p1-dom"].color, b"\x07" * 32, b"otherset")
        s.backup.ped.plan.append("wrong-red")
        with pytest.raises(Pkcs11Error, match="different cloning domains"):
            await backup(s.app, src, admin, "nightly")
        assert await archive_list(s.app, admin) == []
        # A key of another colour is refused, not counted, and nothing is created.
        s.backup.ped.keys["blue"] = s.source.ped.keys["p1-so"]
        s.backup.ped.plan.append("blue")
        with pytest.raises(Pkcs11Error, match="red key was not read"):
            await backup(s.app, src, admin, "nightly")
        assert await archive_list(s.app, admin) == []


async def test_add_keeps_what_is_there_and_replace_drops_it_in_one_go(tmp_path: Path) -> None:
    async with site(tmp_path) as s:
        src, dst, admin = await s.co_session("hsm1"), await s.co_session("hsm2"), await s.admin()
        await make_keys(s, src, 2)
        s.backup.ped.keys["source-red"] = s.source.ped.keys["p1-dom"]
        s.backup.ped.plan.append("source-red")
        await backup(s.app, src, admin, "nightly")
        await make_keys(s, dst, 1, prefix="local")
        await restore(s.app, admin, dst, "nightly", ArchiveMode.ADD)
        assert len(s.target.store.token_objects("p1")) == 6
        await restore(s.app, admin, dst, "nightly", ArchiveMode.ADD)  # nothing doubled
        assert len(s.target.store.token_objects("p1")) == 6
        await restore(s.app, admin, dst, "nightly", ArchiveMode.REPLACE)
        assert len(s.target.store.token_objects("p1")) == 4
        assert not await s.app.find_objects(dst, [Attribute(CKA.LABEL, b"local-000")])
        # --append adds what the backup lacks; --replace makes it the partition's objects now.
        await make_keys(s, src, 1, prefix="later")
        assert (await backup(s.app, src, admin, "nightly", ArchiveMode.ADD))["objects"] == 6
        await s.app.destroy_object(src, (await s.app.find_objects(
            src, [Attribute(CKA.LABEL, b"key-000")]))[0])  # fmt: skip
        assert (await backup(s.app, src, admin, "nightly", ArchiveMode.REPLACE))["objects"] == 5
        with pytest.raises(Pkcs11Error, match="--append"):
            await backup(s.app, src, admin, "nightly")
        with pytest.raises(Pkcs11Error, match="no backup partition 'other'"):
            await backup(s.app, src, admin, "other", ArchiveMode.ADD)


async def test_list_and_delete(tmp_path: Path) -> None:
    async with site(tmp_path) as s:
        src, admin = await s.co_session("hsm1"), await s.admin()
        await make_keys(s, src, 1)
        s.backup.ped.keys["source-red"] = s.source.ped.keys["p1-dom"]
        s.backup.ped.plan.append("source-red")
        await backup(s.app, src, admin, "nightly", labels=("key-000",))
        (row,) = await archive_list(s.app, admin)
        assert row["objects"] == 2 and row["serial"].startswith("150003")
        s.backup.hsm.admin.logout()
        with pytest.raises(Pkcs11Error, match="hsm login"):
            await delete(s.app, admin, "nightly")
        await s.backup.hsm.admin.login(s.backup.notify)
        await delete(s.app, admin, "nightly")
        assert await archive_list(s.app, admin) == []
        assert s.backup.store.backups.objects("nightly") == []
        with pytest.raises(Pkcs11Error, match="no backup partition"):
            await delete(s.app, admin, "nightly")


async def test_the_refusals_say_what_to_do(tmp_path: Path) -> None:
    async with site(tmp_path) as s:
        src, dst, admin = await s.co_session("hsm1"), await s.co_session("hsm2"), await s.admin()
        await make_keys(s, src, 1)
        # The Backup HSM's SO not logged in: nothing asked on its PED, nothing created.
        s.backup.hsm.admin.logout()
        reads = s.backup.ped.reads
        with pytest.raises(Pkcs11Error, match="pedhsm hsm login") as caught:
            await backup(s.app, src, admin, "nightly")
        assert caught.value.rv == CKR.USER_NOT_LOGGED_IN
        assert s.backup.ped.reads == reads and await archive_list(s.app, admin) == []
        await s.backup.hsm.admin.login(s.backup.notify)
        # No Crypto Officer logged in on the source.
        await s.app.logout(src)
        with pytest.raises(Pkcs11Error) as caught:
            await backup(s.app, src, admin, "nightly")
        assert caught.value.rv == CKR.USER_NOT_LOGGED_IN
        # A slot that is not a Backup HSM's admin slot: a partition's.
        with pytest.raises(Pkcs11Error, match="not a Backup HSM"):
            await archive_list(s.app, dst)
        # The admin slot takes no login.
        with pytest.raises(Pkcs11Error, match="takes no login"):
            await s.app.login(admin, 1, bytearray(b"x"))
        # A Backup HSM makes no partitions.
        with pytest.raises(InvalidCommand, match="Backup HSM"):
            s.backup.hsm.partitions.create("p1")
        # A restore of a backup partition that is not there.
        with pytest.raises(Pkcs11Error, match="no backup partition 'gone'"):
            await restore(s.app, admin, dst, "gone")
