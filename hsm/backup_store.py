"""A Backup HSM's backup partitions in SQLite: rows of `hsm.store`'s schema-3 tables.

`hsm.store.Store` owns the connection, the schema and its migration; this is the part of
its API for ``backup_partitions`` and ``backup_objects`` (`Store.backups`), which only a
Backup HSM (`hsm.backup`) fills.  A backup partition's domain and each object's value are
sealed under the device key before they get here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import attrs

#: The tables (schema version 3 of `hsm.store`, which creates them).
BACKUP_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS backup_partitions (name TEXT PRIMARY KEY, serial TEXT NOT NULL, "
    "source_serial TEXT NOT NULL, fingerprint TEXT NOT NULL, domain BLOB NOT NULL, created "
    "REAL NOT NULL, updated REAL NOT NULL)", "CREATE TABLE IF NOT EXISTS backup_objects (id "
    "INTEGER PRIMARY KEY AUTOINCREMENT, partition TEXT NOT NULL, attributes TEXT NOT NULL, "
    "sealed BLOB NOT NULL)", "CREATE INDEX IF NOT EXISTS backup_objects_partition ON "
    "backup_objects(partition)",
)  # fmt: skip

_BACKUP_COLUMNS = "name, serial, source_serial, fingerprint, domain, created, updated"


@attrs.frozen
class BackupRow:
    """A backup partition: its source's serial, its domain (sealed) and when it was made."""

    name: str
    serial: str
    source_serial: str
    fingerprint: str
    domain: bytes = attrs.field(repr=False)  # the cloning domain, sealed under the device key
    created: float
    updated: float
    objects: int = 0


class BackupStore:
    """The backup partitions and their objects (run inside `Store.tx` to change them)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def partitions(self) -> list[BackupRow]:
        rows = self._db.execute(
            f"SELECT {_BACKUP_COLUMNS}, (SELECT COUNT(*) FROM backup_objects o "  # noqa: S608
            "WHERE o.partition=b.name) FROM backup_partitions b ORDER BY name"
        ).fetchall()
        return [BackupRow(*r) for r in rows]

    def partition(self, name: str) -> BackupRow | None:
        return next((b for b in self.partitions() if b.name == name), None)

    def put_partition(self, row: BackupRow) -> None:
        """Create or update (by name) a backup partition's row; its objects stay."""
        self._db.execute(
            "INSERT INTO backup_partitions(name, serial, source_serial, fingerprint, domain, "
            "created, updated) VALUES(?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "source_serial=excluded.source_serial, updated=excluded.updated",
            (row.name, row.serial, row.source_serial, row.fingerprint, row.domain,
             row.created, row.updated),
        )  # fmt: skip

    def delete_partition(self, name: str) -> bool:
        self._db.execute("DELETE FROM backup_objects WHERE partition=?", (name,))
        return self._db.execute("DELETE FROM backup_partitions WHERE name=?", (name,)).rowcount > 0

    def erase(self) -> None:
        """Zeroization: every backup partition and object."""
        self._db.execute("DELETE FROM backup_objects")
        self._db.execute("DELETE FROM backup_partitions")

    def clear_objects(self, name: str) -> None:
        self._db.execute("DELETE FROM backup_objects WHERE partition=?", (name,))

    def add_object(
        self, partition: str, attributes: str, seal: Callable[[int], bytes]
    ) -> int:
        """Store one backed-up object, sealed by *seal(id)*; its id."""
        cur = self._db.execute(
            "INSERT INTO backup_objects(partition, attributes, sealed) VALUES(?, ?, x'')",
            (partition, attributes),
        )
        ident = int(cur.lastrowid or 0)
        self._db.execute("UPDATE backup_objects SET sealed=? WHERE id=?", (seal(ident), ident))
        return ident

    def objects(self, partition: str) -> list[tuple[int, str, bytes]]:
        """(id, attributes, sealed value) of a backup partition's objects, oldest first."""
        return self._db.execute(
            "SELECT id, attributes, sealed FROM backup_objects WHERE partition=? ORDER BY id",
            (partition,),
        ).fetchall()
