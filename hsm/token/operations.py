"""The PKCS#11 object and crypto calls of one session, on one partition's `Vault`.

`hsm.access.ClientAccess` checks the session and the login and hands each call a
`Scope`: the partition, whether the session is read/write, the vault, and the data key
when a Crypto Officer or Crypto User is logged in (None otherwise).  Here the PKCS#11
rules of the objects are kept: private objects are invisible without a login, token
objects need a read/write session, a key's value is unsealed only for the one operation
and wiped after it, and a public key verifies without a login.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from hsm.crypto import wipe
from hsm.state import HsmState
from hsm.token import keygen, mechanisms
from hsm.token import template as tpl
from hsm.token.vault import Vault
from ped.pkcs11.constants import CKA, CKO, CKR
from ped.pkcs11.token import Attribute, AttributeResult, Mechanism, Pkcs11Error


@attrs.frozen
class Scope:
    """What one call works on: a partition's objects, seen from one session."""

    state: HsmState
    client: str
    partition: str
    read_write: bool
    vault: Vault
    data_key: bytearray | None = attrs.field(repr=False)

    def key(self) -> bytearray:
        if self.data_key is None:
            raise Pkcs11Error(
                CKR.USER_NOT_LOGGED_IN,
                f"this needs a login to partition {self.partition!r} (C_Login with the "
                "challenge secret)",
            )
        return self.data_key

    def event(self, event: str, attributes: tpl.Attrs) -> None:
        self.state.event(event, partition=self.partition, client=self.client,
                         label=tpl.label_of(attributes))  # fmt: skip


def is_private(attributes: tpl.Attrs) -> bool:
    return attributes.get(CKA.PRIVATE) is True


def _writable(scope: Scope, attributes: tpl.Attrs) -> None:
    if attributes.get(CKA.TOKEN) is True and not scope.read_write:
        raise Pkcs11Error(
            CKR.SESSION_READ_ONLY, "a token object needs a read/write session (CKF_RW_SESSION)"
        )


def generate_key(scope: Scope, mechanism: Mechanism, template: Sequence[Attribute]) -> int:
    data_key = scope.key()
    new = keygen.generate_secret(mechanism.mechanism, tpl.check_template(template))
    try:
        _writable(scope, new.attributes)
        handle = scope.vault.create(new.attributes, new.value, data_key)
    finally:
        wipe(new.value)
    scope.event("key generated", new.attributes)
    return handle


def generate_key_pair(
    scope: Scope,
    mechanism: Mechanism,
    public_template: Sequence[Attribute],
    private_template: Sequence[Attribute],
) -> tuple[int, int]:
    data_key = scope.key()
    public, private = keygen.generate_pair(
        mechanism.mechanism, tpl.check_template(public_template),
        tpl.check_template(private_template),
    )  # fmt: skip
    try:
        _writable(scope, public)
        _writable(scope, private.attributes)
        pub = scope.vault.create(public, b"", data_key)
        priv = scope.vault.create(private.attributes, private.value, data_key)
    finally:
        wipe(private.value)
    scope.event("key pair generated", private.attributes)
    return pub, priv


def find_objects(scope: Scope, template: Sequence[Attribute]) -> list[int]:
    wanted = tpl.check_template(template, searching=True)
    return scope.vault.find(wanted, private_too=scope.data_key is not None)


def visible(scope: Scope, handle: int) -> tpl.Attrs:
    attributes = scope.vault.attributes(handle)
    if is_private(attributes) and scope.data_key is None:
        raise Pkcs11Error(
            CKR.OBJECT_HANDLE_INVALID,
            f"object {handle} is private: log in to partition {scope.partition!r} first",
        )
    return attributes


def get_attributes(scope: Scope, handle: int, types: Sequence[int]) -> list[AttributeResult]:
    if len(types) > tpl.MAX_TEMPLATE:
        raise Pkcs11Error(CKR.ARGUMENTS_BAD, f"ask for at most {tpl.MAX_TEMPLATE} attributes")
    return tpl.read(visible(scope, handle), types)


def destroy_object(scope: Scope, handle: int) -> None:
    attributes = visible(scope, handle)
    _writable(scope, attributes)
    if attributes.get(CKA.DESTROYABLE) is False:
        raise Pkcs11Error(CKR.ACTION_PROHIBITED, f"object {handle} is not destroyable")
    if attributes.get(CKA.TOKEN) is True:
        scope.key()  # destroying a token object needs the CO or CU
    scope.vault.destroy(handle)
    scope.event("object destroyed", attributes)


def _key(scope: Scope, handle: int) -> tuple[tpl.Attrs, bytearray]:
    """A key's attributes and value, checked against its sealing (the caller wipes it)."""
    try:
        attributes = visible(scope, handle)
    except Pkcs11Error as exc:
        if exc.rv == CKR.OBJECT_HANDLE_INVALID:
            raise Pkcs11Error(CKR.KEY_HANDLE_INVALID, exc.reason) from None
        raise
    if attributes.get(CKA.CLASS) not in (CKO.PRIVATE_KEY, CKO.SECRET_KEY, CKO.PUBLIC_KEY):
        raise Pkcs11Error(CKR.KEY_HANDLE_INVALID, f"object {handle} is not a key")
    return attributes, scope.vault.key_value(handle, scope.key())


def sign(scope: Scope, mechanism: Mechanism, key: int, data: bytes) -> bytes:
    attributes, value = _key(scope, key)
    try:
        return mechanisms.sign(attributes, value, mechanism, data)
    finally:
        wipe(value)


def verify(scope: Scope, mechanism: Mechanism, key: int, data: bytes, signature: bytes) -> None:
    attributes = visible(scope, key)
    if attributes.get(CKA.CLASS) == CKO.PUBLIC_KEY and scope.data_key is None:
        # A public key verifies without a login: its point is public.
        mechanisms.verify(attributes, b"", mechanism, data, signature)
        return
    attributes, value = _key(scope, key)
    try:
        mechanisms.verify(attributes, value, mechanism, data, signature)
    finally:
        wipe(value)


def encrypt(scope: Scope, mechanism: Mechanism, key: int, data: bytes) -> bytes:
    attributes, value = _key(scope, key)
    try:
        return mechanisms.encrypt(attributes, value, mechanism, data)
    finally:
        wipe(value)


def decrypt(scope: Scope, mechanism: Mechanism, key: int, data: bytes) -> bytes:
    attributes, value = _key(scope, key)
    try:
        return mechanisms.decrypt(attributes, value, mechanism, data)
    finally:
        wipe(value)
