"""One partition's PKCS#11 objects: token objects sealed in `hsm.store`, session objects in RAM.

Theory of operation
-------------------
A token object (CKA_TOKEN true) is one row of ``token_objects``: its attributes as JSON
(labels, ids, flags, EC parameters, a public key's point: what PKCS#11 lets anyone read)
and its key value *sealed* with AES-256-GCM under the partition's data key (the key the
Crypto Officer's login opens, as `hsm.objects` blobs).  The sealing's associated data
names the HSM, the partition, the object's handle and the SHA-256 of its attributes'
JSON, so an attribute changed on disk (CKA_SIGN turned on, a label swapped) or a row
moved to another partition makes the key fail to open instead of being used.  No key
value is ever stored in the clear; a public key seals an empty value (its point is
public) and is checked the same way when it is used.

A session object (CKA_TOKEN false) lives in the connection's RAM (`SessionObjects`),
sealed the same way, and goes when the connection closes.  Its handle has the high bit
of a 32-bit handle set, so it never meets a token object's handle (SQLite's rowid).

Handles are per HSM; a handle of another partition is simply not found here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import attrs

from hsm.crypto import UnwrapFailed, unwrap, wrap
from hsm.state import HsmState
from hsm.token.template import Attrs, decode, encode, matches
from ped.pkcs11.constants import CKA, CKR
from ped.pkcs11.token import AttrValue, Pkcs11Error

SESSION_HANDLE_BASE = 0x8000_0000
#: The most objects one partition keeps (token objects), and one connection (session ones).
MAX_OBJECTS = 10_000


@attrs.define(repr=False)
class SessionObjects:
    """A connection's session objects: handle -> (partition, attributes JSON, sealed value)."""

    rows: dict[int, tuple[str, str, bytes]] = attrs.Factory(dict)
    next_handle: int = SESSION_HANDLE_BASE

    def __repr__(self) -> str:
        return f"SessionObjects({len(self.rows)} objects)"


class Vault:
    """The objects of partition *name* (token objects) plus a connection's session objects."""

    def __init__(self, state: HsmState, name: str, session: SessionObjects) -> None:
        self._state = state
        self._name = name
        self._session = session

    def _aad(self, handle: int, attributes: str) -> str:
        digest = hashlib.sha256(attributes.encode()).hexdigest()
        return f"{self._state.aad(self._name, 'token', 'object')}|{handle}|{digest}"

    # ------------------------------------------------------------------ changes

    def create(self, attributes: Attrs, value: bytes | bytearray, data_key: bytearray) -> int:
        """Store a new object; its handle is returned."""
        st = self._state
        text = encode(attributes)
        if attributes.get(CKA.TOKEN) is True:
            with st.store.tx():
                if len(st.store.token_objects(self._name)) >= MAX_OBJECTS:
                    raise Pkcs11Error(
                        CKR.DEVICE_MEMORY,
                        f"partition {self._name!r} holds {MAX_OBJECTS} objects, its most; "
                        "destroy some first",
                    )
                # The handle is in the associated data: the row is made, then sealed.
                return st.store.add_token_object(
                    self._name, text, lambda handle: wrap(data_key, value, self._aad(handle, text))
                )
        if len(self._session.rows) >= MAX_OBJECTS:
            raise Pkcs11Error(
                CKR.DEVICE_MEMORY, f"a connection keeps at most {MAX_OBJECTS} session objects"
            )
        handle = self._session.next_handle
        self._session.next_handle += 1
        self._session.rows[handle] = (
            self._name, text, wrap(data_key, value, self._aad(handle, text))
        )
        return handle

    def destroy(self, handle: int) -> None:
        row = self._session.rows.get(handle)
        if row is not None and row[0] == self._name:
            del self._session.rows[handle]
            return
        with self._state.store.tx():
            if not self._state.store.delete_token_object(self._name, handle):
                raise self._not_found(handle)

    # ------------------------------------------------------------------ reads

    def attributes(self, handle: int) -> Attrs:
        return decode(self._row(handle)[0])

    def key_value(self, handle: int, data_key: bytearray) -> bytearray:
        """Unseal an object's value (the caller wipes it); a damaged object is refused."""
        text, sealed = self._row(handle)
        try:
            return unwrap(data_key, sealed, self._aad(handle, text))
        except UnwrapFailed:
            raise Pkcs11Error(
                CKR.GENERAL_ERROR,
                f"object {handle} of partition {self._name!r} does not open under the "
                "partition's data key (its stored attributes or value were altered); "
                "destroy it and make it again",
            ) from None

    def find(self, template: Mapping[int, AttrValue], *, private_too: bool) -> list[int]:
        """Handles of the objects matching *template* (private ones only when logged in)."""
        rows = [(h, text) for h, text in self._state.store.token_objects(self._name)]
        rows += [(h, r[1]) for h, r in self._session.rows.items() if r[0] == self._name]
        out = []
        for handle, text in rows:
            attrs_ = decode(text)
            if attrs_.get(CKA.PRIVATE) is True and not private_too:
                continue
            if matches(attrs_, template):
                out.append(handle)
        return out

    def _row(self, handle: int) -> tuple[str, bytes]:
        row = self._session.rows.get(handle)
        if row is not None and row[0] == self._name:
            return row[1], row[2]
        stored = self._state.store.token_object(self._name, handle)
        if stored is None:
            raise self._not_found(handle)
        return stored

    def _not_found(self, handle: int) -> Pkcs11Error:
        return Pkcs11Error(
            CKR.OBJECT_HANDLE_INVALID,
            f"no object {handle} in partition {self._name!r} (destroyed, a session object of "
            "a closed connection, or never there); C_FindObjects lists them",
        )
