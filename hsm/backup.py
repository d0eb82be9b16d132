"""A Backup HSM's backup partitions and its ends of ``partition archive`` backup and restore.

Theory of operation
-------------------
``pedhsm mode start --backup`` makes an HSM a **Backup HSM** (the home remembers it).  It
is initialised with ``hsm init`` as any HSM (its own HSM SO, blue key) and holds *backup
partitions*: a name, the serial of the partition backed up, the cloning domain of what it
holds (the red key's secret, sealed under this HSM's device key, and its public
fingerprint), and the objects, each value sealed under the device key too (bound to the
backup partition, the object's row id and the SHA-256 of its attributes).

Objects move only through the cloning channel (``ped.cloning``), relayed unread by
hsmclient; this HSM is the *target* of a backup (`BackupTarget`) and the *source* of a
restore (`BackupSource`).  A backup picks its domain at the handshake from the source's
CLONE_INIT fingerprint: a backup partition of that domain lends its copy; when there is
none, the red key is read on this HSM's PED (the domain's injection: every PED rule
applies), which needs this HSM's SO logged in; a red key of another domain fails the
handshake (both fingerprints in the message).  Nothing is written before the end marker
checks out, then the partition row and every object in one transaction (`--replace`
drops the old objects in the same one): a kill at any moment leaves the backup partition
as it was or fully written.

A backup partition never holds more than one restore carries (`hsm.backup_limit`, the
cloning protocol's bound on one clone): a backup that would leave it with more is refused
at the end marker, before the transaction writes anything (`BackupOverLimit`, naming the
numbers and what to do), and a partition over it (made before the limit was enforced)
is refused up front by ``--append`` and by a restore, never half-way.

hsmclient sees one *admin slot* per Backup HSM (`hsm.backup_access`); its ``ARCHIVE``
requests (docs/protocol/client.md, op 20) land in `BackupClones`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Sequence

from hsm.backup_limit import BackupOverLimit, check_backup_fits, over_limit
from hsm.backup_store import BackupRow
from hsm.cloning import ConnectionClones, SourceEnd, TargetEnd
from hsm.crypto import wipe
from hsm.errors import HsmError
from hsm.policy import Role
from hsm.state import HsmState, check_name
from hsm.store import Store
from ped.cloning import (
    CloneDirection,
    ClonedObject,
    CloneInit,
    CloneInitiator,
    Outgoing,
    domain_fingerprint,
    format_fingerprint,
)
from ped.ntls import messages as m
from ped.ntls.messages import ArchiveAction, ArchiveMode
from ped.ntls.values import MAX_OUTPUT
from ped.pkcs11.constants import CKR
from ped.pkcs11.token import Pkcs11Error

log = logging.getLogger("pedhsm.backup")

BACKUP_META = "backup_hsm"
#: The name the admin slot's sessions carry (partition names cannot start with '#').
ADMIN_PARTITION = "#backup"
#: Backup partitions one Backup HSM holds (their list fits one answer).
MAX_BACKUP_PARTITIONS = 64


def is_backup_hsm(store: Store) -> bool:
    return store.get_meta(BACKUP_META) == "1"


def mark_backup_hsm(store: Store) -> None:
    """``--backup``: this home is a Backup HSM from now on (it holds no partition)."""
    if store.partitions():
        raise HsmError("this home's HSM holds partitions: a Backup HSM needs its own home "
                       "(another --home)")  # fmt: skip
    with store.tx():
        store.set_meta(BACKUP_META, "1")


def _not_found(name: str) -> Pkcs11Error:
    return Pkcs11Error(CKR.ARGUMENTS_BAD, f"no backup partition {name!r} on this Backup HSM "
                       "(`hsmclient partition archive list` lists them)")  # fmt: skip


class BackupPartitions:
    """The backup partitions of this HSM: listing, sealing and unsealing, deleting."""

    def __init__(self, state: HsmState) -> None:
        self.state = state

    def rows(self) -> list[BackupRow]:
        return self.state.store.backups.partitions()

    def get(self, name: str) -> BackupRow:
        row = self.state.store.backups.partition(name)
        if row is None:
            raise _not_found(name)
        return row

    def listing(self) -> list[dict[str, object]]:
        return [{"name": r.name, "serial": r.serial, "source_serial": r.source_serial,
                 "domain": r.fingerprint, "objects": r.objects, "created": r.created,
                 "updated": r.updated} for r in self.rows()]  # fmt: skip

    def show_lines(self) -> list[str]:
        """What ``hsm show`` adds on a Backup HSM."""
        rows = self.rows()
        lines = ["   Backup HSM:          yes (holds backup partitions, no partitions)",
                 f"   Backup partitions:   {len(rows)}"]  # fmt: skip
        for r in rows:
            over = over_limit(r, "restore")  # made before the limit: no restore carries it
            note = f"  (over the {over.limit} one restore carries)" if over else ""
            lines.append(f"     {r.name:<16} source {r.source_serial:<14} domain "
                         f"{r.fingerprint}  {r.objects} objects  "
                         f"{_when(r.updated)}{note}")  # fmt: skip
        return lines

    def _domain_purpose(self, name: str) -> str:
        return self.state.aad(name, Role.DOMAIN.value, "backup")

    def domain(self, row: BackupRow) -> bytearray:
        """The backup partition's cloning domain, unsealed: wipe it after use."""
        return self.state.master.unseal(self._domain_purpose(row.name), row.domain)

    def domain_for(self, fingerprint: str) -> bytearray | None:
        """The domain of a backup partition with that fingerprint, if this HSM has one."""
        for row in self.rows():
            if row.fingerprint == fingerprint:
                return self.domain(row)
        return None

    def seal_domain(self, name: str, domain: bytearray) -> bytes:
        return self.state.master.seal(self._domain_purpose(name), domain)

    def _object_purpose(self, name: str, ident: int, attributes: str) -> str:
        digest = hashlib.sha256(attributes.encode()).hexdigest()
        return f"{self.state.aad(name, 'backup', 'object')}|{ident}|{digest}"

    def add_object(self, name: str, attributes: str, value: bytes | bytearray) -> None:
        self.state.store.backups.add_object(name, attributes, lambda ident: self.state.master.seal(
            self._object_purpose(name, ident, attributes), value))  # fmt: skip

    def objects(self, name: str) -> Iterator[Outgoing]:
        """The backup partition's objects, each value unsealed for its one frame."""
        for ident, attributes, sealed in self.state.store.backups.objects(name):
            value = self.state.master.unseal(self._object_purpose(name, ident, attributes), sealed)
            yield attributes.encode(), value

    def delete(self, name: str) -> None:
        st = self.state
        with st.store.tx():
            if not st.store.backups.delete_partition(name):
                raise _not_found(name)
        st.store.checkpoint()
        st.event("backup partition deleted", partition=name)


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp)) + " UTC"


class BackupTarget(TargetEnd):
    """This Backup HSM receiving a partition's objects into backup partition *name*."""

    def __init__(self, backups: BackupPartitions, name: str, serial: str,
                 source_serial: str, mode: ArchiveMode) -> None:  # fmt: skip
        super().__init__((source_serial, serial))
        self._backups = backups
        self._name = name
        self._serial = serial
        self._source_serial = source_serial
        self._mode = mode
        self._domain: bytes = b""  # sealed, once the handshake found it
        self._fingerprint = ""
        self._refused: BackupOverLimit | None = None  # at the end marker: over the limit

    async def domain(self, init: CloneInit) -> bytearray | None:
        backups, st = self._backups, self._backups.state
        wanted = format_fingerprint(init.fingerprint)
        existing = st.store.backups.partition(self._name)
        if existing is not None:  # --append / --replace: the partition's own domain
            domain = backups.domain(existing)
        else:
            domain = backups.domain_for(wanted) or await self._inject(wanted)
        self._fingerprint = format_fingerprint(domain_fingerprint(domain))
        self._domain = backups.seal_domain(self._name, domain)
        return domain

    async def _inject(self, wanted: str) -> bytearray:
        """Read the source's red key on this HSM's PED: the domain's injection."""
        st = self._backups.state
        if not st.so_logged_in:
            raise Pkcs11Error(CKR.USER_NOT_LOGGED_IN,
                              f"Backup HSM {st.serial} holds no backup partition of cloning "
                              f"domain {wanted}: its red key must be presented on the Backup "
                              "HSM's PED, which needs the Backup HSM's SO logged in: run "
                              "`pedhsm hsm login` there, then this command again")  # fmt: skip
        try:
            async with st.ped_session(_notify) as port:
                red = await port.read_secret(Role.DOMAIN.color, None,
                                             f"cloning domain for backup {self._name}")  # fmt: skip
        except HsmError as exc:
            raise Pkcs11Error(CKR.FUNCTION_FAILED,
                              f"the red key was not read on the Backup HSM's PED: "
                              f"{exc.message}") from None  # fmt: skip
        st.event("cloning domain read", partition=self._name,
                 domain=format_fingerprint(domain_fingerprint(red.secret)))  # fmt: skip
        return red.secret

    async def feed(self, data: bytes) -> bytes:
        answer = await super().feed(data)
        refused = self._refused
        if refused is not None:
            # Over the limit at the end marker, nothing written: hsmclient gets the whole
            # typed refusal, rather than the REJECTED (whose detail is clipped) for the source.
            self._backups.state.event(
                "backup refused", partition=self._name, source=self._source_serial,
                held=refused.held, adding=refused.adding, limit=refused.limit)  # fmt: skip
            raise refused
        return answer

    def store(self, objects: Sequence[ClonedObject]) -> int:
        backups, st = self._backups, self._backups.state
        now = st.clock.now()
        with st.store.tx():  # the partition row and every object, or nothing
            existing = st.store.backups.partition(self._name)
            if existing is not None and self._mode is ArchiveMode.NEW:
                raise ValueError(f"backup partition {self._name!r} was made meanwhile by "
                                 "another backup; run this one again with --append")  # fmt: skip
            if existing is None and len(st.store.backups.partitions()) >= MAX_BACKUP_PARTITIONS:
                raise ValueError(f"this Backup HSM holds {MAX_BACKUP_PARTITIONS} backup "
                                 "partitions, its most; delete one first")  # fmt: skip
            held: set[str] = set()
            if existing is not None and self._mode is not ArchiveMode.REPLACE:
                held = {a for _i, a, _s in st.store.backups.objects(self._name)}
            fresh = _fresh(objects, held)
            try:  # before the first write: a refused backup leaves the transaction untouched
                check_backup_fits(self._name, existing.objects if existing else 0, len(fresh),
                                  self._mode)  # fmt: skip
            except BackupOverLimit as exc:
                self._refused = exc
                raise
            serial = existing.serial if existing else self._serial
            domain = existing.domain if existing else self._domain
            st.store.backups.put_partition(BackupRow(
                self._name, serial, self._source_serial, self._fingerprint, domain, now, now))
            if self._mode is ArchiveMode.REPLACE:
                st.store.backups.clear_objects(self._name)
            for attributes, value in fresh:
                backups.add_object(self._name, attributes, value)
        st.event("backup stored", partition=self._name, source=self._source_serial,
                 count=len(fresh))  # fmt: skip
        return len(fresh)


def _fresh(objects: Sequence[ClonedObject], held: set[str]) -> list[tuple[str, bytes]]:
    """The objects (attributes, value) a backup partition holding *held* lacks, once each."""
    fresh: list[tuple[str, bytes]] = []
    seen = set(held)
    for obj in objects:
        attributes = obj.attributes.decode()
        json.loads(attributes)  # the source's HSM encodes them: JSON or refused
        if attributes not in seen:
            seen.add(attributes)
            fresh.append((attributes, obj.value))
    return fresh


def _notify(text: str) -> None:
    log.info("backup: %s", text)


class BackupSource(SourceEnd):
    """This Backup HSM sending a backup partition's objects to a partition (a restore)."""

    def __init__(self, backups: BackupPartitions, row: BackupRow, target_serial: str) -> None:
        initiator_domain = backups.domain(row)
        try:
            initiator = CloneInitiator(domain=initiator_domain,
                                       direction=CloneDirection.INITIATOR_SENDS,
                                       source_serial=row.serial, target_serial=target_serial)
        finally:
            wipe(initiator_domain)
        state = backups.state
        super().__init__(initiator, lambda: backups.objects(row.name),
                         lambda n: state.event("backup restored", partition=row.name,
                                               target=target_serial, count=n))  # fmt: skip


class BackupClones(ConnectionClones):
    """The Backup HSM's ``ARCHIVE`` requests, on sessions of its admin slot."""

    def __init__(self, backups: BackupPartitions, is_admin: Callable[[int], bool]) -> None:
        # Not the parent's: no partition and no Crypto Officer here, only the admin slot.
        self._backups = backups
        self._is_admin = is_admin  # is this session one of the admin slot's?
        self._open = {}

    def __repr__(self) -> str:
        return f"BackupClones(open={len(self._open)})"

    def check(self, session: int) -> None:
        if not self._is_admin(session):
            raise Pkcs11Error(CKR.FUNCTION_NOT_SUPPORTED,
                              "a Backup HSM's archive runs on its admin slot")

    def open(self, session: int, *, source: bool, peer_serial: str,
             handles: Sequence[int]) -> bytes:  # fmt: skip
        raise Pkcs11Error(CKR.FUNCTION_NOT_SUPPORTED,
                          "a Backup HSM holds no partitions to clone: use `hsmclient "
                          "partition archive`")  # fmt: skip

    async def archive(self, r: m.Archive) -> bytes:
        self.check(r.session)
        self._open.pop(r.session, None)
        backups = self._backups
        if r.action is ArchiveAction.LIST:
            data = json.dumps(backups.listing()).encode()
            if len(data) > MAX_OUTPUT:
                raise Pkcs11Error(CKR.DATA_LEN_RANGE, "the list does not fit one answer")
            return data
        if r.action is ArchiveAction.DELETE:
            self._require_so("deleting a backup partition")
            backups.delete(r.name)
            return b""
        if r.action is ArchiveAction.RESTORE_SOURCE:
            row = backups.get(r.name)
            refused = over_limit(row, "restore")  # up front: never half-way through it
            if refused is not None:
                raise refused
            source = BackupSource(backups, row, r.peer_serial)
            self._open[r.session] = source
            return source.start()
        if r.action is ArchiveAction.BACKUP_TARGET:
            return self._backup_target(r)
        raise Pkcs11Error(CKR.FUNCTION_NOT_SUPPORTED,
                          f"{r.action.name.lower().replace('_', ' ')} is a partition's end, "
                          "not a Backup HSM's")  # fmt: skip

    def _require_so(self, what: str) -> None:
        st = self._backups.state
        if not st.so_logged_in:
            raise Pkcs11Error(CKR.USER_NOT_LOGGED_IN,
                              f"{what} needs the Backup HSM's SO logged in: run `pedhsm hsm "
                              f"login` on Backup HSM {st.serial}, then this command again")

    def _backup_target(self, r: m.Archive) -> bytes:
        backups = self._backups
        try:
            check_name("backup partition name", r.name)
        except HsmError as exc:
            raise Pkcs11Error(CKR.ARGUMENTS_BAD, exc.message) from None
        existing = backups.state.store.backups.partition(r.name)
        if existing is None and r.mode is not ArchiveMode.NEW:
            raise _not_found(r.name)
        if existing is not None and r.mode is ArchiveMode.NEW:
            raise Pkcs11Error(CKR.ARGUMENTS_BAD,
                              f"backup partition {r.name!r} exists: add --append to add to it "
                              "or --replace to replace what it holds")  # fmt: skip
        self._require_so("a backup")
        refused = over_limit(existing, "append") if existing and r.mode is ArchiveMode.ADD else None
        if refused is not None:  # whatever it would add, it stays over: refused before it moves
            raise refused
        serial = existing.serial if existing else (
            f"{backups.state.serial}{secrets.randbelow(10**6):06d}")  # fmt: skip
        self._open[r.session] = BackupTarget(backups, r.name, serial, r.peer_serial, r.mode)
        return serial.encode()
