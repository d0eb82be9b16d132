"""A backup partition never holds more than one restore carries (`hsm.backup_limit`): a
backup past it is refused before anything is written, with the numbers and what to do; one
just at it succeeds and restores; one over it (made before the limit) is refused up front
by --append and by a restore, before the target is touched.  Small limits by monkeypatch
of the named constants, except the last test, which fills a backup partition to the real
limit (`ped.cloning.MAX_OBJECTS`)."""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import pytest
import trio

import hsm.backup_limit
import hsmclient.commands_archive
from hsm.backup import BackupPartitions
from hsm.backup_limit import BackupOverLimit, check_backup_fits
from hsmclient.commands_archive import archive_list, backup, restore
from ped.cloning import MAX_OBJECTS
from ped.daemon.exits import EXIT_ERROR, EXIT_OK
from ped.ntls.messages import ArchiveMode
from ped.pkcs11.constants import CKR
from ped.pkcs11.token import Pkcs11Error
from tests.backup.rig import Site, site
from tests.backup.test_archive_cli import _cli, _daemon
from tests.backup.test_archive_e2e import make_keys, signs, verifies
from tests.hsm.rig import CHAL
from tests.pedserver.fakes import short_tmp


def limit(monkeypatch: pytest.MonkeyPatch, objects: int) -> None:
    """One restore carries *objects* here: on the Backup HSM and in hsmclient alike."""
    monkeypatch.setattr(hsm.backup_limit, "MAX_BACKUP_OBJECTS", objects)
    monkeypatch.setattr(hsmclient.commands_archive, "MAX_ARCHIVE_OBJECTS", objects)


def backed_up(s: Site, name: str) -> tuple[object, list[tuple[int, str, bytes]]]:
    """The backup partition's row and its objects, byte for byte, as the store has them."""
    return s.backup.store.backups.partition(name), s.backup.store.backups.objects(name)


def integrity(s: Site) -> str:
    db = sqlite3.connect(s.backup.home / "state.db")
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def listed(rows: list[dict[str, object]]) -> str:
    """What `hsmclient partition archive list` prints for *rows*."""
    args = argparse.Namespace(json=False, slot=2)
    return hsmclient.commands_archive._said("list", args, {"partitions": rows})


async def first_backup(s: Site, src: int, admin: int, name: str = "nightly") -> None:
    s.backup.ped.keys["source-red"] = s.source.ped.keys["p1-dom"]
    s.backup.ped.plan.append("source-red")  # the domain's injection on hsm3's PED
    await backup(s.app, src, admin, name)


async def test_a_refused_append_names_the_numbers_and_leaves_the_partition_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit(monkeypatch, 6)
    async with site(tmp_path) as s:
        src, dst, admin = await s.co_session("hsm1"), await s.co_session("hsm2"), await s.admin()
        labels = await make_keys(s, src, 2)  # 4 objects
        await first_backup(s, src, admin)
        await make_keys(s, src, 2, prefix="later")  # 4 more: 8 would be over 6
        before = backed_up(s, "nightly")
        hops: list[bytes] = []
        with pytest.raises(Pkcs11Error) as caught:
            await backup(s.app, src, admin, "nightly", ArchiveMode.ADD, tap=hops.append)
        assert caught.value.rv == CKR.DEVICE_MEMORY
        assert caught.value.reason == (
            "backup partition 'nightly' holds 4 objects and this backup would add 4 (8 in "
            "all): one restore carries at most 6 objects, so nothing was written; back up "
            "into another backup partition (--partition OTHER), or replace what it holds "
            "(--replace)")  # fmt: skip
        assert hops  # the objects moved, were checked at the end marker, and not written
        assert backed_up(s, "nightly") == before
        assert integrity(s) == "ok"
        (row,) = await archive_list(s.app, admin)
        assert row["objects"] == 4
        refused = [r for r in s.backup.hsm.state.audit.records() if r["event"] == "backup refused"]
        assert [(r["partition"], r["held"], r["adding"], r["limit"]) for r in refused] == [
            ("nightly", 4, 4, 6)]  # fmt: skip
        # --replace with all 8 is over too; the words say to split them.
        split = r"with 8 objects \(it holds 4\).*at most 6.*--objects"
        with pytest.raises(Pkcs11Error, match=split):
            await backup(s.app, src, admin, "nightly", ArchiveMode.REPLACE)
        assert backed_up(s, "nightly") == before
        # What the refusal advises works: another backup partition for the later keys.
        await backup(s.app, src, admin, "later", labels=("later-000", "later-001"))
        # And the refused one still restores, whole.
        await restore(s.app, admin, dst, "nightly", ArchiveMode.REPLACE)
        assert len(s.target.store.token_objects("p1")) == 4
        for label in labels:
            await verifies(s, src, label, await signs(s, dst, label))


async def test_a_backup_just_at_the_limit_succeeds_and_restores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit(monkeypatch, 6)
    async with site(tmp_path) as s:
        src, dst, admin = await s.co_session("hsm1"), await s.co_session("hsm2"), await s.admin()
        labels = await make_keys(s, src, 2)
        await first_backup(s, src, admin)
        labels += await make_keys(s, src, 1, prefix="later")  # 4 + 2 = 6: just at the limit
        row = await backup(s.app, src, admin, "nightly", ArchiveMode.ADD)
        assert row["objects"] == 6
        # An append that adds nothing new leaves it at the limit: not refused.
        assert (await backup(s.app, src, admin, "nightly", ArchiveMode.ADD))["objects"] == 6
        assert listed([row]).endswith(
            "Backup partition 'nightly' holds 6 of the 6 objects one restore carries: a backup "
            "that would pass it is refused; use another backup partition (--partition OTHER) "
            "or --replace.\n")  # fmt: skip
        await restore(s.app, admin, dst, "nightly", ArchiveMode.REPLACE)
        assert len(s.target.store.token_objects("p1")) == 6
        for label in labels:
            await verifies(s, src, label, await signs(s, dst, label))
        # A new backup partition of exactly the limit, in one go, too.
        assert (await backup(s.app, src, admin, "weekly"))["objects"] == 6


async def test_an_over_limit_partition_is_refused_up_front_and_the_target_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with site(tmp_path) as s:
        src, dst, admin = await s.co_session("hsm1"), await s.co_session("hsm2"), await s.admin()
        await make_keys(s, src, 2)
        await first_backup(s, src, admin)  # 4 objects, then the limit drops under them: as a
        limit(monkeypatch, 3)  # backup partition made before the limit was enforced
        await make_keys(s, dst, 1, prefix="local")
        target_before = s.target.store.token_objects("p1")
        hops: list[bytes] = []
        # hsmclient refuses before it asks the target anything.
        with pytest.raises(Pkcs11Error) as caught:
            await restore(s.app, admin, dst, "nightly", ArchiveMode.REPLACE, tap=hops.append)
        assert caught.value.rv == CKR.DEVICE_MEMORY
        assert "'nightly' holds 4 objects, more than the 3 one restore carries" in str(caught.value)
        assert "--replace" in str(caught.value)
        # The Backup HSM refuses too (an hsmclient that does not check), before any object.
        monkeypatch.setattr(hsmclient.commands_archive, "MAX_ARCHIVE_OBJECTS", 100)
        with pytest.raises(Pkcs11Error) as caught:
            await restore(s.app, admin, dst, "nightly", ArchiveMode.REPLACE, tap=hops.append)
        assert caught.value.rv == CKR.DEVICE_MEMORY
        assert caught.value.reason.startswith(
            "backup partition 'nightly' holds 4 objects, more than the 3 one restore carries "
            "(it was made before this limit was enforced): restore refused before anything "
            "moved; ")  # fmt: skip
        assert hops == [] and s.target.store.token_objects("p1") == target_before
        limit(monkeypatch, 3)
        # --append is refused up front as well: nothing moves, nothing is asked of the PED.
        before, reads = backed_up(s, "nightly"), s.backup.ped.reads
        with pytest.raises(Pkcs11Error, match="append refused before anything moved") as caught:
            await backup(s.app, src, admin, "nightly", ArchiveMode.ADD, tap=hops.append)
        assert caught.value.rv == CKR.DEVICE_MEMORY
        assert hops == [] and backed_up(s, "nightly") == before and s.backup.ped.reads == reads
        # `archive list` and the Backup HSM's `hsm show` say so before anyone tries.
        assert "holds 4 objects, more than the 3 one restore carries: a restore refuses it" in (
            listed(await archive_list(s.app, admin)))  # fmt: skip
        shown = BackupPartitions(s.backup.hsm.state).show_lines()
        assert any("4 objects" in line and "(over the 3 one restore carries)" in line
                   for line in shown)  # fmt: skip
        # --replace brings it back under the limit (2 objects of one label).
        row = await backup(s.app, src, admin, "nightly", ArchiveMode.REPLACE, labels=("key-000",))
        assert row["objects"] == 2
        await restore(s.app, admin, dst, "nightly", ArchiveMode.REPLACE)
        assert len(s.target.store.token_objects("p1")) == 2


def test_the_real_limit_is_the_cloning_protocols_and_its_arithmetic() -> None:
    assert hsm.backup_limit.MAX_BACKUP_OBJECTS == MAX_OBJECTS == 100_000
    assert hsmclient.commands_archive.MAX_ARCHIVE_OBJECTS == MAX_OBJECTS
    check_backup_fits("nightly", MAX_OBJECTS - 2, 2, ArchiveMode.ADD)  # just at it
    check_backup_fits("nightly", MAX_OBJECTS + 5, MAX_OBJECTS, ArchiveMode.REPLACE)
    with pytest.raises(BackupOverLimit) as caught:
        check_backup_fits("nightly", MAX_OBJECTS - 1, 2, ArchiveMode.ADD)
    over = caught.value
    assert (over.partition, over.held, over.adding, over.total, over.limit) == (
        "nightly", 99_999, 2, 100_001, 100_000)  # fmt: skip
    assert over.rv == CKR.DEVICE_MEMORY
    assert "holds 99999 objects and this backup would add 2 (100001 in all)" in over.reason
    with pytest.raises(BackupOverLimit, match="with 100001 objects"):
        check_backup_fits("weekly", 0, MAX_OBJECTS + 1, ArchiveMode.NEW)


def filler(s: Site, name: str, count: int) -> None:
    """*count* more objects in backup partition *name*, straight into the Backup HSM's store
    (their values are no key: they only make up the count, and are never restored here)."""
    store = s.backup.store
    with store.tx():
        for i in range(count):
            store.backups.add_object(name, json.dumps({"filler": i}), lambda _ident: b"\0" * 28)


async def test_the_real_limit_end_to_end(tmp_path: Path) -> None:
    async with site(tmp_path) as s:
        src, dst, admin = await s.co_session("hsm1"), await s.co_session("hsm2"), await s.admin()
        await make_keys(s, src, 1)
        await first_backup(s, src, admin)  # 2 objects
        filler(s, "nightly", MAX_OBJECTS - 4)  # 99,998
        await make_keys(s, src, 1, prefix="later")
        row = await backup(s.app, src, admin, "nightly", ArchiveMode.ADD)  # + 2: 100,000
        assert row["objects"] == MAX_OBJECTS
        await make_keys(s, src, 1, prefix="last")
        before = backed_up(s, "nightly")
        with pytest.raises(Pkcs11Error) as caught:
            await backup(s.app, src, admin, "nightly", ArchiveMode.ADD)
        assert caught.value.reason.startswith(
            "backup partition 'nightly' holds 100000 objects and this backup would add 2 "
            "(100002 in all): one restore carries at most 100000 objects, so nothing was "
            "written; ")  # fmt: skip
        assert backed_up(s, "nightly") == before and integrity(s) == "ok"
        # One more object, as an older Backup HSM could have let in: refused up front.
        filler(s, "nightly", 1)
        target_before = s.target.store.token_objects("p1")
        with pytest.raises(Pkcs11Error, match="holds 100001 objects, more than the 100000"):
            await restore(s.app, admin, dst, "nightly", ArchiveMode.REPLACE)
        assert s.target.store.token_objects("p1") == target_before


async def test_the_command_line_says_the_numbers_and_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit(monkeypatch, 4)
    chal = tmp_path / "challenge.txt"
    chal.write_bytes(CHAL + b"\n")
    with short_tmp() as home:
        async with site(tmp_path, client_home=home) as s, trio.open_nursery() as nursery:
            await _daemon(s, home, nursery)
            src, admin = await s.co_session("hsm1"), await s.admin()
            await make_keys(s, src, 2)
            await first_backup(s, src, admin)  # 4 objects: at the limit
            await make_keys(s, src, 1, prefix="later")
            p1, slot = await s.slot("hsm1", "p1"), await s.slot("hsm3", "backup HSM")
            common = ("--home", str(home), "--slot", str(slot))
            code, out, err = await _cli("partition", "archive", "backup", *common, "--append",
                                        "--source-slot", str(p1), "--partition", "nightly",
                                        "--password-file", str(chal))  # fmt: skip
            assert (code, out) == (EXIT_ERROR, "")
            assert err == (
                "hsmclient: partition archive backup failed: CKR_DEVICE_MEMORY: backup "
                "partition 'nightly' holds 4 objects and this backup would add 2 (6 in all): "
                "one restore carries at most 4 objects, so nothing was written; back up into "
                "another backup partition (--partition OTHER), or replace what it holds "
                "(--replace)\n")  # fmt: skip
            code, out, _ = await _cli("partition", "archive", "list", *common)
            assert code == EXIT_OK and out.endswith(
                "Backup partition 'nightly' holds 4 of the 4 objects one restore carries: a "
                "backup that would pass it is refused; use another backup partition "
                "(--partition OTHER) or --replace.\n")  # fmt: skip
            nursery.cancel_scope.cancel()
