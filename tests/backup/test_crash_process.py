"""Kill -9 at random points of backups and restores: pedhsm (the source or the Backup HSM)
or hsmclient, at least 50 times, seeded.

Processes set up with their own commands (`pedtools.bench.backup_site`): the source HSM's
partition p1 with 40 key pairs (80 objects: two batches each way), a Backup HSM holding
``base`` (a backup of them), hsmclient between.  Each round runs ``hsmclient partition
archive backup`` (into a new backup partition) or ``restore --replace`` of ``base`` into
p1 (after adding a marker key, so that "as it was" and "fully restored" differ), kills
one process at a random moment of it, starts that process again and checks, reading each
HSM's state:

* never a lost object on the source: a backup leaves p1's objects as they were;
* never a partial restore: p1 holds exactly what it held before, or exactly ``base``;
* a backup partition is absent or holds every object p1 held, never fewer;
* and the command, when it failed, said so on one line (``hsmclient: ...``).
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pedtools.bench.backup_site import BackupSite
from pedtools.testing import Site

pytestmark = pytest.mark.process

SEED = 17
KILLS = 50
KEYS = 40
VICTIMS = ("source", "backup", "hsmclient")


def _rows(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db, timeout=30.0)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def p1_objects(b: BackupSite) -> list[str]:
    """The attributes of every object of the source's p1 (sorted): what p1 holds."""
    rows = _rows(b.homes["source"] / "state.db",
                 "SELECT attributes FROM token_objects WHERE partition='p1'")  # fmt: skip
    return sorted(str(r[0]) for r in rows)


def backup_objects(b: BackupSite, name: str) -> list[str] | None:
    """The attributes of backup partition *name*'s objects (sorted); None if absent."""
    db = b.homes["backup"] / "state.db"
    if not _rows(db, "SELECT name FROM backup_partitions WHERE name=?", name):
        assert not _rows(db, "SELECT id FROM backup_objects WHERE partition=?", name)
        return None
    rows = _rows(db, "SELECT attributes FROM backup_objects WHERE partition=?", name)
    return sorted(str(r[0]) for r in rows)


@pytest.fixture
def backup_site() -> Iterator[BackupSite]:
    with Site(prefix="bk-crash-") as site:
        b = BackupSite(site)
        b.up()
        yield b


def test_kill9_during_backups_and_restores_leaves_all_or_nothing(backup_site: BackupSite) -> None:
    b = backup_site
    b.make_keys("p1", KEYS, "key")
    started = time.monotonic()
    b.must(b.archive("backup", *b.backup_args("base")))
    took = time.monotonic() - started
    base = backup_objects(b, "base")
    assert base is not None and base == p1_objects(b) and len(base) == 2 * KEYS
    rng = random.Random(SEED)
    seen = {"done": 0, "cut": 0}
    for i in range(KILLS):
        op, victim = rng.choice(("backup", "restore")), rng.choice(VICTIMS)
        if op == "restore":
            b.make_keys("p1", 1, f"marker-{i}")
            args = b.restore_args("base", "p1", "--replace")
        else:
            args = b.backup_args(f"b{i}")
        before = p1_objects(b)
        proc = b.popen_archive(op, *args)
        try:
            proc.wait(timeout=rng.uniform(0.0, took * 1.5))  # the moment of the kill
        except subprocess.TimeoutExpired:
            pass
        b.kill(victim)
        _, err = proc.communicate(timeout=120)
        seen["done" if proc.returncode == 0 else "cut"] += 1
        assert proc.returncode == 0 or err.startswith("hsmclient"), (op, victim, err)
        b.restart(victim)
        after = p1_objects(b)
        if op == "backup":
            assert after == before, f"round {i}: the source lost objects ({victim} killed)"
            held = backup_objects(b, f"b{i}")
            assert held is None or held == before, f"round {i}: a partial backup"
        else:
            assert after in (before, base), f"round {i}: a partial restore ({victim} killed)"
    assert seen["cut"] >= 5, seen  # the kills did cut commands short
    for which in ("source", "backup"):
        assert _rows(b.homes[which] / "state.db", "PRAGMA integrity_check") == [("ok",)]
