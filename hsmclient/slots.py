"""hsmclient's slot ids: one per (server, partition serial), assigned once and never changed.

Theory of operation
-------------------
Applications and their configuration files name tokens by slot id, so an id must mean
the same partition for the life of the home: the map lives in ``HOME/slots.sqlite3``
(0600), an id is assigned the first time a (server, serial) pair is seen, and the next
free id only ever grows.  Nothing shifts when a server or partition goes away:
`forget_server` (``hsmclient server delete``) *retires* the server's ids, which are then
never handed to another partition; if the very same server name shows the very same
serial again, it gets its old id back (an id never changes its meaning).  Ids start at
0, as Luna's slot numbers do.

SQLite gives atomic transactions between the daemon and a command run beside it
(``hsmclient verify`` without a daemon); ``BEGIN IMMEDIATE`` makes assigning an id a
single writer's job.
"""

from __future__ import annotations

import datetime
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import attrs

from ped.errors import PedError

SLOTS_FILE = "slots.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS slots (
    slot_id INTEGER PRIMARY KEY,
    server TEXT NOT NULL,
    serial TEXT NOT NULL,
    retired INTEGER NOT NULL DEFAULT 0,
    first_seen TEXT NOT NULL,
    UNIQUE (server, serial)
);
CREATE TABLE IF NOT EXISTS next_id (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO next_id (one, value) VALUES (1, 0);
"""


class SlotMapError(PedError):
    """The slot map file cannot be used; the message names it and what to do."""


@attrs.frozen
class SlotEntry:
    """One assigned slot id (*retired*: its server was deleted; the id stays taken)."""

    slot_id: int
    server: str
    serial: str
    retired: bool
    first_seen: str


class SlotMap:
    """The persistent (server, serial) -> slot id map in ``HOME/slots.sqlite3``."""

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.path = Path(home) / SLOTS_FILE

    def __repr__(self) -> str:
        return f"SlotMap({str(self.path)!r})"

    def slot_for(self, server: str, serial: str) -> int:
        """The slot id of *serial* on *server*, assigned now if it is the first sight."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT slot_id, retired FROM slots WHERE server = ? AND serial = ?",
                (server, serial),
            ).fetchone()
            if row is not None:
                if row[1]:
                    db.execute("UPDATE slots SET retired = 0 WHERE slot_id = ?", (row[0],))
                return int(row[0])
            (slot_id,) = db.execute("SELECT value FROM next_id").fetchone()
            db.execute("UPDATE next_id SET value = value + 1")
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            db.execute(
                "INSERT INTO slots (slot_id, server, serial, first_seen) VALUES (?, ?, ?, ?)",
                (slot_id, server, serial, stamp),
            )
            return int(slot_id)

    def where(self, slot_id: int) -> tuple[str, str] | None:
        """(server, serial) of a live slot id; None for an unknown or retired one."""
        if not self.path.exists():
            return None
        with self._transaction() as db:
            row = db.execute(
                "SELECT server, serial FROM slots WHERE slot_id = ? AND retired = 0",
                (slot_id,),
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def forget_server(self, server: str) -> int:
        """Retire every id of *server* (deleted from the registry); returns how many."""
        if not self.path.exists():
            return 0
        with self._transaction() as db:
            done = db.execute(
                "UPDATE slots SET retired = 1 WHERE server = ? AND retired = 0", (server,)
            )
            return done.rowcount

    def retire(self, server: str, serial: str) -> None:
        """Retire one id (an HA group deleted); it is given back if the pair returns."""
        if not self.path.exists():
            return
        with self._transaction() as db:
            db.execute("UPDATE slots SET retired = 1 WHERE server = ? AND serial = ?",
                       (server, serial))

    def entries(self) -> list[SlotEntry]:
        """Every id ever assigned, in id order (retired ones too)."""
        if not self.path.exists():
            return []
        with self._transaction() as db:
            rows = db.execute(
                "SELECT slot_id, server, serial, retired, first_seen FROM slots "
                "ORDER BY slot_id"
            ).fetchall()
        return [SlotEntry(int(r[0]), str(r[1]), str(r[2]), bool(r[3]), str(r[4])) for r in rows]

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Owner-only from its creation, whatever the caller's umask.
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            with closing(sqlite3.connect(self.path, timeout=10.0)) as db:
                db.executescript(_SCHEMA)
                with db:  # commit on success, roll back on any error
                    db.execute("BEGIN IMMEDIATE")
                    yield db
        except sqlite3.Error as exc:
            raise SlotMapError(
                f"{self.path}: cannot use the slot map ({exc}); restore it from a backup: "
                "a new one would give the partitions new slot ids"
            ) from None
        except OSError as exc:
            raise SlotMapError(f"{self.path}: {exc.strerror or exc}") from None
