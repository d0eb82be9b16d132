"""The registry of pinned peers: which certificates this daemon accepts, by name.

Theory of operation
-------------------
A daemon accepts a TLS peer only if the peer's certificate is, byte for byte, one
registered here (compared by SHA-256 fingerprint).  pedserver calls its peers
*appliances* (HSM hosts it dials: name, certificate, IP address, port); pedclient calls
them *peers* (pedservers that may dial it: name and certificate).  One class serves
both; *program* only changes the commands named in messages.

Storage is one SQLite file ``<home>/pins.sqlite3`` (standard library, atomic
transactions, safe against a concurrent reader).  The CLI changes it while the daemon
runs; the daemon takes a fresh `snapshot` for every connection, so a registration or a
deletion applies to the next handshake without a restart.  A deleted certificate leaves
a tombstone (name, fingerprint, time) so that a later handshake with it is refused as
*deleted*, naming the old registration, instead of merely *unknown*.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Literal

import attrs
from cryptography import x509

from ped.tls.certfile import check_self_signed, load_certificate_pem
from ped.tls.certs import (
    certificate_pem,
    fingerprint,
    normalize_fingerprint,
    utcnow,
    validity_problem,
)
from ped.tls.errors import (
    CertificateError,
    DuplicateCertificate,
    DuplicateName,
    InvalidAddress,
    InvalidPeerName,
    RegistryError,
    UnknownName,
)

PINS_FILE = "pins.sqlite3"
DEFAULT_PEER_PORT = 9697
MAX_NAME = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

Program = Literal["pedserver", "pedclient", "hsmclient", "pedhsm"]


@attrs.frozen
class ProgramRole:
    """How one daemon names its pinned peers, and whether it dials them (needs an address)."""

    noun: str  # its word for a registered peer on its command line
    other: str  # the program at the other end
    other_noun: str  # the other program's word for this one
    dials: bool  # registrations carry the address this daemon dials
    default_port: int | None
    dial_reason: str  # why an address is needed (or, if not dialling, why there is none)


#: The four pinned-TLS daemons: the Remote PED's peer link (pedserver dials pedclient) and
#: the client path (hsmclient dials pedhsm's listener, port 1792).
ROLES: dict[str, ProgramRole] = {
    "pedserver": ProgramRole(
        "appliance", "pedclient", "peer", True, DEFAULT_PEER_PORT,
        "an appliance needs the IP address pedserver dials (--ip)",
    ),
    "pedclient": ProgramRole(
        "peer", "pedserver", "appliance", False, None,
        "pedclient peers have no address: pedserver dials in",
    ),
    "hsmclient": ProgramRole(
        "server", "pedhsm", "client", True, 1792,
        "a server needs the IP address hsmclient dials (--ip)",
    ),
    "pedhsm": ProgramRole(
        "client", "hsmclient", "server", False, None,
        "pedhsm clients have no address: hsmclient dials in",
    ),
}  # fmt: skip

_SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (
    name TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL UNIQUE,
    certificate TEXT NOT NULL,
    ip TEXT,
    port INTEGER,
    registered_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deleted (
    fingerprint TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    deleted_at TEXT NOT NULL
);
"""


@attrs.frozen
class Peer:
    """One registered peer.  *ip*/*port* are set for pedserver's appliances only."""

    name: str
    fingerprint: str
    certificate: x509.Certificate = attrs.field(repr=False, eq=False)
    ip: str | None = None
    port: int | None = None
    registered_at: str = ""

    @property
    def certificate_pem(self) -> bytes:
        return certificate_pem(self.certificate)


@attrs.frozen
class Tombstone:
    name: str
    fingerprint: str
    deleted_at: str


@attrs.frozen
class PinSnapshot:
    """The registry as read at one moment: what one handshake is checked against."""

    program: Program
    peers: tuple[Peer, ...]
    tombstones: tuple[Tombstone, ...]

    def by_fingerprint(self, fp: str) -> Peer | None:
        return next((p for p in self.peers if p.fingerprint == fp), None)

    def by_name(self, name: str) -> Peer | None:
        return next((p for p in self.peers if p.name == name), None)

    def tombstone(self, fp: str) -> Tombstone | None:
        return next((t for t in self.tombstones if t.fingerprint == fp), None)


class PinStore:
    """The pinned peers of one daemon, kept in ``<home>/pins.sqlite3``."""

    def __init__(self, home_dir: str | os.PathLike[str], *, program: Program) -> None:
        if program not in ROLES:
            raise ValueError(f"program is one of {', '.join(ROLES)}")
        self.path = Path(home_dir) / PINS_FILE
        self.program: Program = program

    def __repr__(self) -> str:
        return f"PinStore({str(self.path)!r}, program={self.program!r})"

    @property
    def role(self) -> ProgramRole:
        return ROLES[self.program]

    @property
    def noun(self) -> str:
        """What this daemon calls its peers on the command line."""
        return self.role.noun

    # --- changes -------------------------------------------------------------------

    def register(
        self,
        name: str,
        certificate: bytes | x509.Certificate,
        *,
        ip: str | None = None,
        port: int | None = None,
        now: datetime.datetime | None = None,
    ) -> Peer:
        """Pin *certificate* (PEM bytes or a certificate) under *name*.

        pedserver's appliances need *ip* (and *port*, default 9697); pedclient's peers
        take neither.  Refuses an expired certificate (useless) and a not-yet-valid one
        (a wrong clock on one side) with a `CertificateError`.
        """
        check_name(name)
        source = f"certificate for {name!r}"
        if isinstance(certificate, x509.Certificate):
            check_self_signed(certificate, source=source)
            cert = certificate
        else:
            cert = load_certificate_pem(certificate, source=source)
        problem = validity_problem(cert, now)
        if problem:
            other = self.role.other
            raise CertificateError(
                f"certificate for {name!r} is {problem} (valid "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC); check both clocks, or "
                f"have the other side run: {other} certificate regen"
            )
        ip, port = self._check_address(ip, port)
        fp = fingerprint(cert)
        pem = certificate_pem(cert).decode("ascii")
        stamp = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._transaction() as db:
            row = db.execute("SELECT name FROM peers WHERE fingerprint = ?", (fp,)).fetchone()
            if row is not None:
                raise DuplicateCertificate(
                    f"this certificate ({fp}) is already registered as {self.noun} "
                    f"{row[0]!r}; to rename it: {self.program} {self.noun} delete --name "
                    f"{row[0]}, then register it again"
                )
            if db.execute("SELECT 1 FROM peers WHERE name = ?", (name,)).fetchone():
                raise DuplicateName(
                    f"{self.noun} {name!r} is already registered; to replace its "
                    f"certificate: {self.program} {self.noun} delete --name {name}, then "
                    f"register it again"
                )
            db.execute("DELETE FROM deleted WHERE fingerprint = ?", (fp,))
            db.execute(
                "INSERT INTO peers (name, fingerprint, certificate, ip, port, registered_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, fp, pem, ip, port, stamp),
            )
        return Peer(name, fp, cert, ip, port, stamp)

    def delete(self, name: str) -> Peer:
        """Unpin *name*; the next handshake with its certificate is refused as deleted."""
        check_name(name)
        stamp = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._transaction() as db:
            row = db.execute(_SELECT + " WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise UnknownName(self._unknown(name))
            peer = _peer(row)
            db.execute("DELETE FROM peers WHERE name = ?", (name,))
            db.execute(
                "INSERT OR REPLACE INTO deleted (fingerprint, name, deleted_at) VALUES (?, ?, ?)",
                (peer.fingerprint, name, stamp),
            )
        return peer

    # --- reads ---------------------------------------------------------------------

    def list(self) -> list[Peer]:
        return list(self.snapshot().peers)

    def get(self, name: str) -> Peer:
        check_name(name)
        peer = self.snapshot().by_name(name)
        if peer is None:
            raise UnknownName(self._unknown(name))
        return peer

    def lookup(self, fp: str) -> Peer | None:
        """The peer pinned with fingerprint *fp* (any usual spelling), or None."""
        return self.snapshot().by_fingerprint(normalize_fingerprint(fp))

    def snapshot(self) -> PinSnapshot:
        """Everything, read in one transaction (an empty registry if there is no file).

        A daemon takes one per handshake, so the last one is kept (per registry file, in
        this process) while the file is provably unchanged: same inode, size and times,
        same SQLite file change counter (bumped by every committed write in rollback-
        journal mode), and no journal or WAL file beside it.  The key is read *before*
        the registry, so a write racing the read only ever causes a re-read.
        """
        if not self.path.exists():
            return PinSnapshot(self.program, (), ())
        key = _registry_key(self.path)
        cached = _SNAPSHOTS.get(str(self.path))
        if key is not None and cached is not None and cached[0] == (self.program, key):
            return cached[1]
        with self._transaction() as db:
            peers = tuple(_peer(r) for r in db.execute(_SELECT + " ORDER BY name"))
            tombs = tuple(
                Tombstone(*r)
                for r in db.execute("SELECT name, fingerprint, deleted_at FROM deleted")
            )
        snap = PinSnapshot(self.program, peers, tombs)
        if key is None:
            _SNAPSHOTS.pop(str(self.path), None)
        else:
            _SNAPSHOTS[str(self.path)] = ((self.program, key), snap)
        return snap

    # --- internals -----------------------------------------------------------------

    def _unknown(self, name: str) -> str:
        return f"no {self.noun} named {name!r}; see: {self.program} {self.noun} list"

    def _check_address(self, ip: str | None, port: int | None) -> tuple[str | None, int | None]:
        role = self.role
        if not role.dials:
            if ip is not None or port is not None:
                raise InvalidAddress(role.dial_reason)
            return None, None
        if ip is None:
            raise InvalidAddress(role.dial_reason)
        try:
            ip = str(ipaddress.ip_address(ip.strip()))
        except ValueError:
            raise InvalidAddress(f"{ip!r} is not an IPv4 or IPv6 address") from None
        port = role.default_port if port is None else port
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise InvalidAddress(f"port {port!r} is not between 1 and 65535")
        return ip, port

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with closing(sqlite3.connect(self.path, timeout=10.0)) as db:
                db.executescript(_SCHEMA)
                with db:  # commit on success, roll back on any error
                    db.execute("BEGIN IMMEDIATE")
                    yield db
        except sqlite3.Error as exc:
            raise RegistryError(f"{self.path}: cannot use the registry ({exc})") from None


_SELECT = "SELECT name, fingerprint, certificate, ip, port, registered_at FROM peers"

#: registry path -> ((program, file key), the snapshot read under that key).
_SNAPSHOTS: dict[str, tuple[tuple[str, tuple[object, ...]], PinSnapshot]] = {}


def _registry_key(path: Path) -> tuple[object, ...] | None:
    """What identifies the registry's content without reading it, or None (do not cache).

    None while a rollback journal or a WAL file exists (a write in progress, or a mode
    whose commits do not touch the main file) or when the file cannot be read.
    """
    for suffix in ("-journal", "-wal"):
        if os.path.lexists(f"{path}{suffix}"):
            return None
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            header = f.read(100)
    except OSError:
        return None
    if len(header) < 100:
        return None
    # Bytes 24-27: file change counter; 92-99: version-valid-for and SQLite version.
    return (
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        header[24:28],
        header[92:100],
    )


def _peer(row: tuple[str, str, str, str | None, int | None, str]) -> Peer:
    name, fp, pem, ip, port, stamp = row
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, x509.InvalidVersion):
        raise RegistryError(
            f"the registry entry {name!r} holds a damaged certificate; delete it and "
            f"register the certificate again"
        ) from None
    return Peer(name, fp, cert, ip, port, stamp)


def check_name(name: str) -> None:
    """Names are 1-64 of letters, digits, '.', '_', '-', starting with a letter or digit."""
    if not isinstance(name, str) or len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise InvalidPeerName(
            f"{name!r} is not a valid name: use 1 to {MAX_NAME} letters, digits, '.', '_' "
            f"or '-', starting with a letter or digit"
        )
