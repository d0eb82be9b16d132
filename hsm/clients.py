"""The client registry: which hsmclient certificates pedhsm admits, and their partitions.

Theory of operation
-------------------
A client is a name, a pinned certificate and, optionally, its host name (Luna's
``-hostname``).  Certificates live in ``ped.tls.PinStore(HOME/ntls, program="pedhsm")``,
the same registry the other pinned-TLS daemons use (deleted certificates leave a
tombstone, so a later connection with one is refused as *deleted*, naming the old
client); the host name and the partition assignments live in `hsm.store` (atomic, with
the rest of the HSM's state).  The two files are written one after the other: a
registration clears any assignments left under the name, so a crash between the two
writes never hands an old client's partitions to a new one.

Changing the registry needs the HSM SO logged in (Luna's admin); reading it does not.
The HSM's own server certificate for port 1792 (``ntls certificate``) is made at first
need in the same ``ntls`` directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hsm.errors import AlreadyExists, CertificateRefused, HsmError, InvalidCommand, NotFound
from hsm.state import HsmState, confirm
from ped.tls.certs import (
    Identity,
    describe,
    ensure_identity,
    export_certificate,
    normalize_fingerprint,
)
from ped.tls.errors import (
    CertificateError,
    DuplicateCertificate,
    DuplicateName,
    TlsError,
    UnknownName,
)
from ped.tls.pins import Peer, PinStore

NTLS_DIR = "ntls"
MAX_HOSTNAME = 253
_HOSTNAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9.-]{{0,{MAX_HOSTNAME - 1}}}")


def _hsm_error(exc: TlsError) -> HsmError:
    """The registry's errors as the HSM's (same message; the control socket's codes)."""
    text = str(exc)
    if isinstance(exc, DuplicateName | DuplicateCertificate):
        return AlreadyExists(text)
    if isinstance(exc, UnknownName):
        return NotFound(text)
    if isinstance(exc, CertificateError):
        return CertificateRefused(text)
    return HsmError(text)


class ClientRegistry:
    """``client ...`` and ``ntls certificate ...``: registered clients and the HSM's identity."""

    def __init__(self, state: HsmState, home: Path) -> None:
        self._state = state
        self.ntls_home = home / NTLS_DIR
        self.pins = PinStore(self.ntls_home, program="pedhsm")

    # ------------------------------------------------------------------ the listener's question

    def is_registered(self, fingerprint: str) -> str | None:
        """The client name a certificate fingerprint is registered under, or None."""
        peer = self.pins.lookup(fingerprint)
        return peer.name if peer is not None else None

    def refusal(self, fingerprint: str) -> str:
        """Why a certificate that `is_registered` does not know is refused, and the fix."""
        fp = normalize_fingerprint(fingerprint)
        tomb = self.pins.snapshot().tombstone(fp)
        if tomb is not None:
            return (
                f"certificate {fp} belonged to client {tomb.name!r}, deleted at "
                f"{tomb.deleted_at}; to admit it again: pedhsm client register --name "
                f"{tomb.name} --certificate FILE"
            )
        return (
            f"certificate {fp} is not registered; on the HSM: pedhsm client register "
            "--name NAME --certificate FILE (the file from `hsmclient certificate export`)"
        )

    # ------------------------------------------------------------------ changes (HSM SO)

    def register(self, name: str, certificate_pem: bytes, hostname: str | None) -> str:
        st = self._state
        st.require_so()
        if hostname is not None and not _HOSTNAME.fullmatch(hostname):
            raise InvalidCommand(
                f"host name {hostname!r} is not valid: 1-{MAX_HOSTNAME} letters, digits, "
                "'-' and '.'"
            )
        try:
            peer = self.pins.register(name, certificate_pem)
        except TlsError as exc:
            raise _hsm_error(exc) from None
        with st.store.tx():
            st.store.put_client(name, hostname)
        st.event("client registered", client=name, fingerprint=peer.fingerprint)
        return (
            f"Client {name!r} registered (certificate {peer.fingerprint}). Assign it "
            f"partitions with `client assignpartition --client {name} --partition P`."
        )

    def delete(self, name: str, force: bool = False) -> str:
        st = self._state
        st.require_so()
        self._peer(name)
        confirm(force, f"client {name!r} loses its partitions and its certificate is refused")
        try:
            peer = self.pins.delete(name)
        except TlsError as exc:
            raise _hsm_error(exc) from None
        with st.store.tx():
            st.store.delete_client(name)
        st.event("client deleted", client=name, fingerprint=peer.fingerprint)
        return (
            f"Client {name!r} deleted; its certificate ({peer.fingerprint}) is refused from "
            "now on."
        )

    def assign(self, client: str, partition: str) -> str:
        st = self._state
        st.require_so()
        self._peer(client)
        st.partition(partition, initialised=False)
        with st.store.tx():
            added = st.store.assign_partition(client, partition)
        if not added:
            return f"Partition {partition!r} was already assigned to client {client!r}."
        st.event("partition assigned", client=client, partition=partition)
        return f"Partition {partition!r} assigned to client {client!r}."

    def revoke(self, client: str, partition: str) -> str:
        st = self._state
        st.require_so()
        self._peer(client)
        with st.store.tx():
            removed = st.store.revoke_partition(client, partition)
        if not removed:
            raise NotFound(
                f"partition {partition!r} is not assigned to client {client!r}; "
                f"`client show --name {client}` lists its partitions"
            )
        st.event("partition revoked", client=client, partition=partition)
        return f"Partition {partition!r} revoked from client {client!r}."

    # ------------------------------------------------------------------ reads

    def _peer(self, name: str) -> Peer:
        try:
            return self.pins.get(name)
        except TlsError as exc:
            raise _hsm_error(exc) from None

    def list_clients(self) -> list[dict[str, Any]]:
        return [self._row(peer) for peer in self.pins.list()]

    def show(self, name: str) -> dict[str, Any]:
        return self._row(self._peer(name))

    def _row(self, peer: Peer) -> dict[str, Any]:
        store = self._state.store
        return {
            "name": peer.name,
            "hostname": store.client_hostname(peer.name),
            "fingerprint": peer.fingerprint,
            "registered_at": peer.registered_at,
            "partitions": store.assigned_partitions(peer.name),
        }

    # ------------------------------------------------------------------ the HSM's identity

    def identity(self) -> Identity:
        """The HSM's certificate and key for port 1792 (``HOME/ntls/identity.pem``), made
        at first need; the listener serves with it."""
        return ensure_identity(self.ntls_home, f"pedhsm {self._state.serial}")

    def certificate_show(self) -> str:
        return describe(self.identity().certificate)

    def certificate_export(self, path: str) -> str:
        identity = self.identity()
        target = Path(path)
        if not target.is_absolute():
            raise CertificateRefused(f"{path}: give the file as an absolute path")
        try:
            export_certificate(identity.certificate, target)
        except OSError as exc:
            raise CertificateRefused(f"{path}: cannot write ({exc.strerror})") from None
        return (
            f"HSM certificate written to {path} (SHA-256 {identity.fingerprint}); on the client "
            f"host: `hsmclient server register --name NAME --certificate {path} --ip ADDRESS`."
        )
