"""Durable state of the emulated HSM in SQLite (standard library).

Theory of operation
-------------------
One database file, ``state.db``, in the HSM's home.  The journal is WAL with
``synchronous=FULL``: a transaction is on disk when `commit` returns, so the engine
commits every failure-counter change *before* it reports the result, and a ``kill -9``
at any moment never forgets a failed attempt.  ``secure_delete`` overwrites deleted rows
with zeros and zeroization checkpoints and truncates the WAL, so erased objects do not
linger in free pages.  On open the store runs ``PRAGMA integrity_check`` and checks the
schema version; a damaged file stops the HSM with `StateCorrupt` instead of serving from
half a state.

Nothing stored here is a secret in the clear: role keys are wrapped under KEKs derived
from PED secrets, the RPV and activation caches are sealed under the device key, the
client path's PKCS#11 key values (`hsm.token`) under the partition's data key.  Schema 2
adds those objects and the clients' partitions, 3 a Backup HSM's (`hsm.backup_store`);
an older file is migrated in place in one transaction (a crash leaves it as it was).
"""

from __future__ import annotations

import contextlib
import enum
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from hsm.backup_store import BACKUP_SCHEMA, BackupStore
from hsm.errors import StateCorrupt

SCHEMA_VERSION = 3
DB_FILE = "state.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS partitions (
    name TEXT PRIMARY KEY,
    serial TEXT NOT NULL,
    initialised INTEGER NOT NULL DEFAULT 0,
    policies TEXT NOT NULL DEFAULT '{}',
    escrow BLOB
);
CREATE TABLE IF NOT EXISTS roles (
    scope TEXT NOT NULL,
    role TEXT NOT NULL,
    keyset_id BLOB NOT NULL,
    wrapped BLOB NOT NULL,
    wrapped_chal BLOB,
    failures INTEGER NOT NULL DEFAULT 0,
    locked TEXT NOT NULL DEFAULT '',
    locked_until REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, role)
);
CREATE TABLE IF NOT EXISTS objects (
    partition TEXT NOT NULL,
    label TEXT NOT NULL,
    blob BLOB NOT NULL,
    PRIMARY KEY (partition, label)
);
CREATE TABLE IF NOT EXISTS activation (
    partition TEXT NOT NULL,
    role TEXT NOT NULL,
    sealed BLOB NOT NULL,
    stamped REAL NOT NULL,
    PRIMARY KEY (partition, role)
);
"""

#: What version 2 adds (also the migration of a version-1 file).
_SCHEMA_V2 = (
    "CREATE TABLE IF NOT EXISTS token_objects (handle INTEGER PRIMARY KEY AUTOINCREMENT, "
    "partition TEXT NOT NULL, attributes TEXT NOT NULL, sealed BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS token_objects_partition ON token_objects(partition)",
    "CREATE TABLE IF NOT EXISTS clients (name TEXT PRIMARY KEY, hostname TEXT)",
    "CREATE TABLE IF NOT EXISTS client_partitions (client TEXT NOT NULL, "
    "partition TEXT NOT NULL, PRIMARY KEY (client, partition))",
)

HSM_SCOPE = "#hsm"  # scope of the HSM-wide roles; partition names cannot start with '#'


class Unchanged(enum.Enum):
    """The value that leaves a column as it is in `Store.update_partition` (None is NULL)."""

    UNCHANGED = enum.auto()


UNCHANGED = Unchanged.UNCHANGED


@attrs.frozen
class RoleRow:
    scope: str
    role: str
    keyset_id: bytes
    wrapped: bytes = attrs.field(repr=False)
    wrapped_chal: bytes | None = attrs.field(repr=False)
    failures: int
    locked: str  # '' | 'timed' | 'reset' | 'permanent'
    locked_until: float


@attrs.frozen
class PartitionRow:
    name: str
    serial: str
    initialised: bool
    policies: dict[int, int]
    escrow: bytes | None = attrs.field(repr=False)


class Store:
    def __init__(self, home: Path) -> None:
        self.path = home / DB_FILE
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")
            result = self._db.execute("PRAGMA integrity_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StateCorrupt(
                f"state database {self.path} cannot be opened ({exc}); "
                "restore it from a backup or start a new home"
            ) from None
        if result != "ok":
            raise StateCorrupt(
                f"state database {self.path} failed its integrity check ({result}); "
                "restore it from a backup or start a new home"
            )
        self._db.executescript(_SCHEMA)
        self.backups = BackupStore(self._db)  # a Backup HSM's backup partitions (schema 3)
        version = self.get_meta("schema_version")
        if version in (None, "1", "2"):
            # A new file, or an older one: add the later versions' tables and the version
            # in one transaction.
            with self.tx():
                for statement in (*_SCHEMA_V2, *BACKUP_SCHEMA):
                    self._db.execute(statement)
                self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif version != str(SCHEMA_VERSION):
            raise StateCorrupt(
                f"state database {self.path} has schema version {version}, "
                f"this pedhsm understands {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def tx(self) -> Iterator[None]:
        """One atomic, durable transaction (nested calls join the outer one)."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def checkpoint(self) -> None:
        """Move everything out of the WAL and truncate it (after zeroization)."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # --- meta ---------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT v FROM meta WHERE k=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self._db.execute("DELETE FROM meta WHERE k=?", (key,))
        else:
            self._db.execute(
                "INSERT INTO meta(k, v) VALUES(?, ?) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
                (key, value),
            )

    # --- roles --------------------------------------------------------------------

    def get_role(self, scope: str, role: str) -> RoleRow | None:
        row = self._db.execute(
            "SELECT scope, role, keyset_id, wrapped, wrapped_chal, failures, locked, "
            "locked_until FROM roles WHERE scope=? AND role=?",
            (scope, role),
        ).fetchone()
        return RoleRow(*row) if row else None

    def all_roles(self) -> list[RoleRow]:
        rows = self._db.execute(
            "SELECT scope, role, keyset_id, wrapped, wrapped_chal, failures, locked, "
            "locked_until FROM roles ORDER BY scope, role"
        ).fetchall()
        return [RoleRow(*r) for r in rows]

    def put_role(
        self,
        scope: str,
        role: str,
        keyset_id: bytes,
        wrapped: bytes,
        wrapped_chal: bytes | None = None,
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO roles(scope, role, keyset_id, wrapped, wrapped_chal, "
            "failures, locked, locked_until) VALUES(?, ?, ?, ?, ?, 0, '', 0)",
            (scope, role, keyset_id, wrapped, wrapped_chal),
        )

    def update_role(self, scope: str, role: str, **fields: object) -> None:
        allowed = {"keyset_id", "wrapped", "wrapped_chal", "failures", "locked", "locked_until"}
        if not fields or not set(fields) <= allowed:
            raise ValueError(f"cannot update role fields {sorted(fields)}")
        cols = ", ".join(f"{name}=?" for name in fields)
        self._db.execute(
            f"UPDATE roles SET {cols} WHERE scope=? AND role=?",  # noqa: S608 - names checked
            (*fields.values(), scope, role),
        )

    # --- partitions -----------------------------------------------------------------

    def get_partition(self, name: str) -> PartitionRow | None:
        row = self._db.execute(
            "SELECT name, serial, initialised, policies, escrow FROM partitions WHERE name=?",
            (name,),
        ).fetchone()
        return self._partition(row) if row else None

    def partitions(self) -> list[PartitionRow]:
        rows = self._db.execute(
            "SELECT name, serial, initialised, policies, escrow FROM partitions ORDER BY name"
        ).fetchall()
        return [self._partition(r) for r in rows]

    @staticmethod
    def _partition(row: tuple[Any, ...]) -> PartitionRow:
        policies = {int(k): int(v) for k, v in json.loads(row[3]).items()}
        return PartitionRow(row[0], row[1], bool(row[2]), policies, row[4])

    def add_partition(self, name: str, serial: str) -> None:
        self._db.execute("INSERT INTO partitions(name, serial) VALUES(?, ?)", (name, serial))

    def update_partition(
        self,
        name: str,
        *,
        initialised: bool | None = None,
        policies: dict[int, int] | None = None,
        escrow: bytes | Unchanged | None = UNCHANGED,
    ) -> None:
        if initialised is not None:
            self._db.execute(
                "UPDATE partitions SET initialised=? WHERE name=?", (int(initialised), name)
            )
        if policies is not None:
            self._db.execute(
                "UPDATE partitions SET policies=? WHERE name=?",
                (json.dumps({str(k): v for k, v in policies.items()}), name),
            )
        if escrow is not UNCHANGED:
            self._db.execute("UPDATE partitions SET escrow=? WHERE name=?", (escrow, name))

    def clear_partition(self, name: str) -> None:
        """Erase everything a partition holds, leaving the empty, uninitialised partition."""
        self._db.execute("DELETE FROM objects WHERE partition=?", (name,))
        self._db.execute("DELETE FROM token_objects WHERE partition=?", (name,))
        self._db.execute("DELETE FROM roles WHERE scope=?", (name,))
        self._db.execute("DELETE FROM activation WHERE partition=?", (name,))
        self._db.execute(
            "UPDATE partitions SET initialised=0, policies='{}', escrow=NULL WHERE name=?",
            (name,),
        )

    def delete_partition(self, name: str) -> None:
        self.clear_partition(name)
        self._db.execute("DELETE FROM client_partitions WHERE partition=?", (name,))
        self._db.execute("DELETE FROM partitions WHERE name=?", (name,))

    def zeroize(self) -> None:
        """Erase partitions, objects and roles; the auditor (and its log) stays, so that
        what led to a zeroization can still be read."""
        for table in ("objects", "token_objects", "client_partitions", "activation", "partitions"):
            self._db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        self.backups.erase()
        self._db.execute("DELETE FROM roles WHERE NOT (scope=? AND role='auditor')", (HSM_SCOPE,))

    # --- objects --------------------------------------------------------------------

    def put_object(self, partition: str, label: str, blob: bytes) -> None:
        self._db.execute(
            "INSERT INTO objects(partition, label, blob) VALUES(?, ?, ?)", (partition, label, blob)
        )

    def objects(self, partition: str) -> list[tuple[str, bytes]]:
        return self._db.execute(
            "SELECT label, blob FROM objects WHERE partition=? ORDER BY label", (partition,)
        ).fetchall()

    def count_objects(self, partition: str) -> int:
        count = self._db.execute(
            "SELECT COUNT(*) FROM objects WHERE partition=?", (partition,)
        ).fetchone()[0]
        return int(count)

    # --- activation cache (sealed) --------------------------------------------------

    def put_activation(self, partition: str, role: str, sealed: bytes, stamped: float) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO activation(partition, role, sealed, stamped) "
            "VALUES(?, ?, ?, ?)",
            (partition, role, sealed, stamped),
        )

    def activations(self) -> list[tuple[str, str, bytes, float]]:
        return self._db.execute(
            "SELECT partition, role, sealed, stamped FROM activation"
        ).fetchall()

    def delete_activation(self, partition: str | None = None, role: str | None = None) -> None:
        if partition is None:
            self._db.execute("DELETE FROM activation")
        elif role is None:
            self._db.execute("DELETE FROM activation WHERE partition=?", (partition,))
        else:
            self._db.execute(
                "DELETE FROM activation WHERE partition=? AND role=?", (partition, role)
            )

    def stamp_activations(self, now: float) -> None:
        self._db.execute("UPDATE activation SET stamped=?", (now,))

    # --- PKCS#11 objects of the client path (hsm.token) -------------------------------

    def add_token_object(
        self, partition: str, attributes: str, seal: Callable[[int], bytes]
    ) -> int:
        """Store one object, sealed by *seal(handle)*; its handle (never reused) is returned."""
        cur = self._db.execute(
            "INSERT INTO token_objects(partition, attributes, sealed) VALUES(?, ?, x'')",
            (partition, attributes),
        )
        handle = int(cur.lastrowid or 0)
        self._db.execute("UPDATE token_objects SET sealed=? WHERE handle=?", (seal(handle), handle))
        return handle

    def token_object(self, partition: str, handle: int) -> tuple[str, bytes] | None:
        row = self._db.execute(
            "SELECT attributes, sealed FROM token_objects WHERE partition=? AND handle=?",
            (partition, handle),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def token_objects(self, partition: str) -> list[tuple[int, str]]:
        """(handle, public attributes) of every object of *partition*, oldest first."""
        return self._db.execute(
            "SELECT handle, attributes FROM token_objects WHERE partition=? ORDER BY handle",
            (partition,),
        ).fetchall()

    def delete_token_object(self, partition: str, handle: int) -> bool:
        sql = "DELETE FROM token_objects WHERE partition=? AND handle=?"
        return self._db.execute(sql, (partition, handle)).rowcount > 0

    # --- registered clients and their partitions (hsm.clients) ------------------------

    def put_client(self, name: str, hostname: str | None) -> None:
        """A (re-)registered client: its host name, and no partitions yet."""
        self._db.execute("DELETE FROM client_partitions WHERE client=?", (name,))
        sql = "INSERT OR REPLACE INTO clients(name, hostname) VALUES(?, ?)"
        self._db.execute(sql, (name, hostname))

    def client_hostname(self, name: str) -> str | None:
        row = self._db.execute("SELECT hostname FROM clients WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def delete_client(self, name: str) -> None:
        self._db.execute("DELETE FROM client_partitions WHERE client=?", (name,))
        self._db.execute("DELETE FROM clients WHERE name=?", (name,))

    def assign_partition(self, client: str, partition: str) -> bool:
        """Assign; False when it already was."""
        sql = "INSERT OR IGNORE INTO client_partitions(client, partition) VALUES(?, ?)"
        return self._db.execute(sql, (client, partition)).rowcount > 0

    def revoke_partition(self, client: str, partition: str) -> bool:
        sql = "DELETE FROM client_partitions WHERE client=? AND partition=?"
        return self._db.execute(sql, (client, partition)).rowcount > 0

    def assigned_partitions(self, client: str) -> list[str]:
        sql = "SELECT partition FROM client_partitions WHERE client=? ORDER BY partition"
        return [r[0] for r in self._db.execute(sql, (client,)).fetchall()]
