"""A small in-memory `PartitionAccess` for the client-protocol tests (until pedhsm's own).

One client's view: the partitions it is assigned, sessions, a login with a challenge
(wrong ones counted, as pedhsm counts them), EC P-256 key pairs and AES keys made with
`cryptography`, ECDSA sign/verify, AES-GCM, random.  Records what it was asked, so tests
can see which calls reached the HSM side.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import attrs
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ped.pkcs11.constants import CKA, CKK, CKM, CKO, CKR
from ped.pkcs11.token import (
    Attribute,
    AttributeResult,
    GcmParams,
    Mechanism,
    MechanismInfo,
    PartitionInfo,
    Pkcs11Error,
    TokenInfo,
)

CHALLENGE = b"challenge-secret-7Qx"
P256_OID = bytes.fromhex("06082a8648ce3d030107")


@attrs.define
class Partition:
    serial: str
    label: str
    activated: bool = True
    auto_activation: bool = False
    failures: int = 0  # counted failed logins (wrong challenge only)
    objects: dict[int, dict[int, object]] = attrs.field(factory=dict)
    keys: dict[int, object] = attrs.field(factory=dict)


class FakeAccess:
    """`PartitionAccess` for one client connection over shared *partitions*."""

    def __init__(self, partitions: Sequence[Partition], log: list[str] | None = None) -> None:
        self.parts = {p.serial: p for p in partitions}
        self.sessions: dict[int, str] = {}
        self.logged_in: set[str] = set()
        self.calls: list[str] = log if log is not None else []
        self.closed = False
        self._next = 100

    def _handle(self) -> int:
        self._next += 1
        return self._next

    def _part(self, serial: str) -> Partition:
        if serial not in self.parts:
            raise Pkcs11Error(CKR.TOKEN_NOT_PRESENT, f"no partition {serial} for this client")
        return self.parts[serial]

    def _session(self, session: int, *, user: bool = False) -> Partition:
        if session not in self.sessions:
            raise Pkcs11Error(CKR.SESSION_HANDLE_INVALID, f"no session {session}")
        part = self.parts[self.sessions[session]]
        if user and part.serial not in self.logged_in:
            raise Pkcs11Error(CKR.USER_NOT_LOGGED_IN, "log in first")
        return part

    def partitions(self) -> Sequence[PartitionInfo]:
        self.calls.append("partitions")
        return [PartitionInfo(p.serial, p.label, True, p.activated,
                              auto_activation=p.auto_activation)
                for p in self.parts.values()]  # fmt: skip

    async def token_info(self, serial: str) -> TokenInfo:
        p = self._part(serial)
        return TokenInfo(p.label, p.serial, flags=0x40D)

    async def mechanisms(self, serial: str) -> Sequence[MechanismInfo]:
        self._part(serial)
        return [
            MechanismInfo(CKM.ECDSA, 256, 256, 0x2800),
            MechanismInfo(CKM.AES_GCM, 32, 32, 0x300),
        ]

    async def open_session(self, serial: str, read_write: bool) -> int:
        self._part(serial)
        handle = self._handle()
        self.sessions[handle] = serial
        self.calls.append("open_session")
        return handle

    async def close_session(self, session: int) -> None:
        self._session(session)
        del self.sessions[session]

    async def login(self, session: int, user_type: int, pin: bytearray) -> None:
        part = self._session(session)
        self.calls.append("login")
        if not part.activated:
            raise Pkcs11Error(
                CKR.PIN_EXPIRED, "the partition is not activated: activate it with the PED"
            )
        if bytes(pin) != CHALLENGE:
            part.failures += 1
            raise Pkcs11Error(CKR.PIN_INCORRECT, "wrong challenge")
        self.logged_in.add(part.serial)

    async def logout(self, session: int) -> None:
        part = self._session(session)
        self.logged_in.discard(part.serial)

    async def generate_key(
        self, session: int, mechanism: Mechanism, template: Sequence[Attribute]
    ) -> int:
        part = self._session(session, user=True)
        if mechanism.mechanism != CKM.AES_KEY_GEN:
            raise Pkcs11Error(CKR.MECHANISM_INVALID, "AES only here")
        handle = self._handle()
        part.keys[handle] = AESGCM(AESGCM.generate_key(256))
        part.objects[handle] = {
            CKA.CLASS: CKO.SECRET_KEY,
            CKA.KEY_TYPE: CKK.AES,
            **{a.type: a.value for a in template},
        }
        return handle

    async def generate_key_pair(
        self,
        session: int,
        mechanism: Mechanism,
        public_template: Sequence[Attribute],
        private_template: Sequence[Attribute],
    ) -> tuple[int, int]:
        part = self._session(session, user=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pub, priv = self._handle(), self._handle()
        point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        part.keys[priv], part.keys[pub] = key, key.public_key()
        part.objects[pub] = {
            CKA.CLASS: CKO.PUBLIC_KEY,
            CKA.KEY_TYPE: CKK.EC,
            CKA.EC_POINT: point,
            **{a.type: a.value for a in public_template},
        }
        part.objects[priv] = {
            CKA.CLASS: CKO.PRIVATE_KEY,
            CKA.KEY_TYPE: CKK.EC,
            CKA.SENSITIVE: True,
            **{a.type: a.value for a in private_template},
        }
        return pub, priv

    async def find_objects(self, session: int, template: Sequence[Attribute]) -> Sequence[int]:
        part = self._session(session)
        return [
            h
            for h, attrs_ in part.objects.items()
            if all(attrs_.get(a.type) == a.value for a in template)
        ]

    async def get_attributes(
        self, session: int, handle: int, types: Sequence[int]
    ) -> Sequence[AttributeResult]:
        part = self._session(session)
        obj = part.objects.get(handle)
        if obj is None:
            raise Pkcs11Error(CKR.OBJECT_HANDLE_INVALID, f"no object {handle}")
        out = []
        for t in types:
            if t == CKA.VALUE and obj.get(CKA.CLASS) != CKO.PUBLIC_KEY:
                out.append(AttributeResult(t, None, CKR.ATTRIBUTE_SENSITIVE))
            elif t in obj:
                out.append(AttributeResult(t, obj[t]))  # type: ignore[arg-type]
            else:
                out.append(AttributeResult(t, None, CKR.ATTRIBUTE_TYPE_INVALID))
        return out

    async def destroy_object(self, session: int, handle: int) -> None:
        part = self._session(session, user=True)
        if part.objects.pop(handle, None) is None:
            raise Pkcs11Error(CKR.OBJECT_HANDLE_INVALID, f"no object {handle}")
        part.keys.pop(handle, None)

    def _key(self, session: int, key: int) -> object:
        part = self._session(session, user=True)
        if key not in part.keys:
            raise Pkcs11Error(CKR.KEY_HANDLE_INVALID, f"no key {key}")
        return part.keys[key]

    async def sign(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        k = self._key(session, key)
        assert isinstance(k, ec.EllipticCurvePrivateKey)
        self.calls.append("sign")
        return k.sign(data, ec.ECDSA(hashes.SHA256()))

    async def verify(
        self, session: int, mechanism: Mechanism, key: int, data: bytes, signature: bytes
    ) -> None:
        k = self._key(session, key)
        assert isinstance(k, ec.EllipticCurvePublicKey)
        try:
            k.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise Pkcs11Error(CKR.SIGNATURE_INVALID, "signature does not verify") from None

    async def encrypt(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        k = self._key(session, key)
        assert isinstance(k, AESGCM) and isinstance(mechanism.parameter, GcmParams)
        return k.encrypt(mechanism.parameter.iv, data, mechanism.parameter.aad or None)

    async def decrypt(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        k = self._key(session, key)
        assert isinstance(k, AESGCM) and isinstance(mechanism.parameter, GcmParams)
        try:
            return k.decrypt(mechanism.parameter.iv, data, mechanism.parameter.aad or None)
        except InvalidTag:
            raise Pkcs11Error(CKR.ENCRYPTED_DATA_INVALID, "tag mismatch") from None

    async def generate_random(self, session: int, length: int) -> bytes:
        self._session(session)
        return os.urandom(length)

    async def close(self) -> None:
        self.closed = True
        self.sessions.clear()
        self.logged_in.clear()
