"""pedclient's PED id map: numbered PED ids -> pedserver addresses, kept in its home.

An administrator names each Remote PED workstation once (``pedclient mode assignid --id 1
--ip A --port 1503``) and the HSMs on this host then connect by number (``hsm ped
connect --id 1``): pedclient looks the number up.  The reference names the commands
(assignid, releaseid, setid, getid, testid, deleteid) but not their exact meaning; ours:

* ``assignid`` gives a *new or released* id an address; it refuses an id that has one
  (``setid`` changes it) and an address another id already has (one name per PED);
* ``setid`` sets an id's address whether or not it had one (create or change);
* ``releaseid`` takes the address away but keeps the number reserved ("released");
* ``deleteid`` forgets the id altogether;
* ``getid`` prints an id's address, the id of an address, or every id.

The map lives in ``HOME/ped-ids.json`` (0600, replaced atomically, edits serialised by a
lock file), ids 0-999.  This module only reads and writes the file; the command lines
are `pedclient.idcommands`'.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from ped.errors import PedError

ID_FILE = "ped-ids.json"
LOCK_FILE = "ped-ids.lock"
MIN_ID, MAX_ID = 0, 999
DEFAULT_PEDSERVER_PORT = 1503
#: A map of 1000 entries is well under this; a bigger file is not ours.
MAX_FILE_BYTES = 256 * 1024
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class PedIdError(PedError):
    """A PED id command cannot be done; the message says why and what to do."""


def check_id(value: object) -> int:
    """A PED id (0-999), or `PedIdError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_ID <= value <= MAX_ID:
        raise PedIdError(f"a PED id is a whole number from {MIN_ID} to {MAX_ID}, not {value!r}")
    return value


def check_port(value: object) -> int:
    """A TCP port (1-65535), or `PedIdError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise PedIdError(f"port {value!r} is not a TCP port (1-65535); pedserver uses "
                         f"{DEFAULT_PEDSERVER_PORT}")
    return value


def check_host(value: object) -> str:
    """An IP address or a host name as pedserver's address, or `PedIdError`."""
    text = value.strip() if isinstance(value, str) else ""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    if (
        0 < len(text) <= 253
        and all(_LABEL.match(label) for label in labels)
        and not all(label.isdigit() for label in labels)  # 999.1.1.1 is no host name
    ):
        return text.lower()
    raise PedIdError(f"{value!r} is neither an IP address nor a host name")


@attrs.frozen
class PedAddress:
    """Where a pedserver listens."""

    host: str
    port: int = DEFAULT_PEDSERVER_PORT

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _assign_hint(ped_id: int | str = "N") -> str:
    return f"`pedclient mode assignid --id {ped_id} --ip ADDRESS --port {DEFAULT_PEDSERVER_PORT}`"


@attrs.frozen
class PedIdMap:
    """The ids: an address each, or None for a released id (number kept, no address)."""

    entries: Mapping[int, PedAddress | None] = attrs.field(factory=dict)

    def known(self) -> str:
        """The ids there are, in words."""
        if not self.entries:
            return "no PED ids are defined yet"
        return "PED ids defined: " + ", ".join(
            str(n) if a is not None else f"{n} (released)" for n, a in sorted(self.entries.items())
        )

    def address(self, ped_id: int) -> PedAddress:
        """The address of *ped_id*; `PedIdError` naming the ids there are otherwise."""
        if ped_id not in self.entries:
            raise PedIdError(f"PED id {ped_id} is not defined ({self.known()}); assign it "
                             f"with {_assign_hint(ped_id)}")
        found = self.entries[ped_id]
        if found is None:
            raise PedIdError(f"PED id {ped_id} is released: no pedserver is assigned to it; "
                             f"assign one with {_assign_hint(ped_id)}")
        return found

    def id_of(self, address: PedAddress) -> int | None:
        for n, a in self.entries.items():
            if a == address:
                return n
        return None

    def _with(self, ped_id: int, address: PedAddress | None) -> PedIdMap:
        return PedIdMap({**self.entries, ped_id: address})

    def _check_free_address(self, ped_id: int, address: PedAddress) -> None:
        other = self.id_of(address)
        if other is not None and other != ped_id:
            raise PedIdError(f"{address.target} is PED id {other} already; one PED has one "
                             f"id (`pedclient mode deleteid --id {other}` first)")

    def assign(self, ped_id: int, address: PedAddress) -> PedIdMap:
        current = self.entries.get(ped_id)
        if current is not None:
            raise PedIdError(f"PED id {ped_id} is assigned to {current.target} already; "
                             f"change it with `pedclient mode setid --id {ped_id} --ip ... "
                             f"--port ...`, or release it first")
        self._check_free_address(ped_id, address)
        return self._with(ped_id, address)

    def set(self, ped_id: int, address: PedAddress) -> PedIdMap:
        self._check_free_address(ped_id, address)
        return self._with(ped_id, address)

    def release(self, ped_id: int) -> PedIdMap:
        self.address(ped_id)  # unknown or released already: says so
        return self._with(ped_id, None)

    def delete(self, ped_id: int) -> PedIdMap:
        if ped_id not in self.entries:
            raise PedIdError(f"PED id {ped_id} is not defined ({self.known()})")
        return PedIdMap({n: a for n, a in self.entries.items() if n != ped_id})

    def rows(self) -> list[dict[str, Any]]:
        """One row per id, in order: ``{"id", "host", "port", "target"}`` (None when released)."""
        return [
            {"id": n, "host": a and a.host, "port": a and a.port, "target": a and a.target}
            for n, a in sorted(self.entries.items())
        ]

    def to_json(self) -> str:
        ids = {str(n): None if a is None else {"host": a.host, "port": a.port}
               for n, a in sorted(self.entries.items())}
        return json.dumps({"version": 1, "ids": ids}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> PedIdMap:
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != 1:
                raise ValueError("not a version 1 PED id map")
            entries: dict[int, PedAddress | None] = {}
            for key, value in data["ids"].items():
                ped_id = check_id(int(key))
                entries[ped_id] = None if value is None else PedAddress(
                    check_host(value["host"]), check_port(value["port"]))
        except (ValueError, KeyError, TypeError, AttributeError, PedIdError) as exc:
            raise PedIdError(f"{where} is damaged ({exc}); fix or remove it") from None
        return cls(entries)


class PedIdStore:
    """The map's file in pedclient's home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / ID_FILE

    def load(self) -> PedIdMap:
        """The map (empty when the file does not exist yet)."""
        try:
            with self.path.open("rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return PedIdMap()
        except OSError as exc:
            raise PedIdError(f"cannot read {self.path}: {exc.strerror}") from None
        if len(data) > MAX_FILE_BYTES:
            raise PedIdError(f"{self.path} is larger than {MAX_FILE_BYTES} bytes: not a PED "
                             "id map; fix or remove it")
        return PedIdMap.from_json(data.decode("utf-8", "replace"), str(self.path))

    def save(self, ids: PedIdMap) -> None:
        """Replace the file atomically (a reader sees the old map or the new one)."""
        fd, tmp = tempfile.mkstemp(prefix=".ped-ids.", dir=self.home)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(ids.to_json())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise read-modify-write: two administrators' edits never lose one."""
        fd = os.open(self.home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock
