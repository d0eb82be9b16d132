"""The backup partitions' rows (`hsm.backup_store`): a version-2 home gains them in place,
zeroization erases them, and no value is in them in the clear."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hsm.backup_store import BackupRow
from hsm.store import DB_FILE, Store


def test_a_version_2_home_gets_the_backup_tables_in_place(tmp_path: Path) -> None:
    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)
    db.execute("DROP TABLE backup_objects")
    db.execute("DROP TABLE backup_partitions")
    db.execute("UPDATE meta SET v='2' WHERE k='schema_version'")
    db.close()
    store = Store(tmp_path)
    try:
        assert store.get_meta("schema_version") == "3"
        assert store.backups.partitions() == []
    finally:
        store.close()


def test_zeroization_erases_the_backup_partitions(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        with store.tx():
            store.backups.put_partition(BackupRow("nightly", "150003000001", "150001000001",
                                                  "aaaa-bbbb-cccc-dddd", b"sealed", 1.0, 1.0))
            store.backups.add_object("nightly", '{"3": "6b"}', lambda ident: b"sealed value")
        (row,) = store.backups.partitions()
        assert row.objects == 1 and "sealed" not in repr(row)
        with store.tx():
            store.zeroize()
        assert store.backups.partitions() == [] and store.backups.objects("nightly") == []
    finally:
        store.close()
