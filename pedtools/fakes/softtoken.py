"""`SoftBackend`: an in-memory PKCS#11 `Backend` for tests (never the HSM, never product code).

Tokens live in memory, one per slot, each with its PIN.  It keeps the rules the client
path promises applications: login state per application (a second C_Login answers
CKR_USER_ALREADY_LOGGED_IN; closing the application's last session logs it out), private
objects invisible before login, private and secret keys sensitive and never extractable,
token objects only from read-write sessions, session objects gone with their session.
Keys: AES (16/24/32 bytes) and generic secrets; EC P-256 and Ed25519 key pairs.  Use:
ECDSA (raw and with SHA-256), EdDSA, AES-GCM, SHA256-HMAC, random numbers.  Every call
is recorded by name in `SoftBackend.calls` so tests can see what crossed the contract.
"""

from __future__ import annotations

import hmac
import itertools
import os
from collections.abc import Sequence
from hashlib import sha256

import attrs
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ped.pkcs11.constants import CKA, CKF, CKF_MECH, CKF_TOKEN, CKK, CKM, CKO, CKR, CKU
from ped.pkcs11.token import (
    CKS_RO_PUBLIC_SESSION,
    CKS_RO_USER_FUNCTIONS,
    CKS_RW_PUBLIC_SESSION,
    CKS_RW_USER_FUNCTIONS,
    Attribute,
    AttributeResult,
    AttrValue,
    GcmParams,
    Mechanism,
    MechanismInfo,
    Pkcs11Error,
    SessionInfo,
    SlotInfo,
    TokenInfo,
)

P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")  # OID prime256v1, DER
ED25519_PARAMS = (bytes.fromhex("06032b6570"), b"\x13\x0cedwards25519")  # OID; PrintableString
_EC = CKF_MECH.EC_F_P | CKF_MECH.EC_NAMEDCURVE | CKF_MECH.EC_UNCOMPRESS
MECHANISMS = (
    MechanismInfo(CKM.AES_KEY_GEN, 16, 32, CKF_MECH.GENERATE),
    MechanismInfo(CKM.GENERIC_SECRET_KEY_GEN, 1, 512, CKF_MECH.GENERATE),
    MechanismInfo(CKM.EC_KEY_PAIR_GEN, 256, 256, CKF_MECH.GENERATE_KEY_PAIR | _EC),
    MechanismInfo(CKM.EC_EDWARDS_KEY_PAIR_GEN, 255, 255, CKF_MECH.GENERATE_KEY_PAIR),
    MechanismInfo(CKM.ECDSA, 256, 256, CKF_MECH.SIGN | CKF_MECH.VERIFY | _EC),
    MechanismInfo(CKM.ECDSA_SHA256, 256, 256, CKF_MECH.SIGN | CKF_MECH.VERIFY | _EC),
    MechanismInfo(CKM.EDDSA, 255, 255, CKF_MECH.SIGN | CKF_MECH.VERIFY),
    MechanismInfo(CKM.AES_GCM, 16, 32, CKF_MECH.ENCRYPT | CKF_MECH.DECRYPT),
    MechanismInfo(CKM.SHA256_HMAC, 1, 512, CKF_MECH.SIGN | CKF_MECH.VERIFY),
)
_SIGNING = {
    CKM.ECDSA: CKK.EC, CKM.ECDSA_SHA256: CKK.EC, CKM.EDDSA: CKK.EC_EDWARDS,
    CKM.SHA256_HMAC: CKK.GENERIC_SECRET,
}  # fmt: skip
Key = (
    bytes
    | ec.EllipticCurvePrivateKey
    | ec.EllipticCurvePublicKey
    | ed25519.Ed25519PrivateKey
    | ed25519.Ed25519PublicKey
)


@attrs.define
class SoftObject:
    attributes: dict[int, AttrValue] = attrs.field(repr=False)
    key: Key = attrs.field(repr=False)
    owner_session: int | None  # a session object dies with this session

    def get(self, attr: int, default: AttrValue | None = None) -> AttrValue | None:
        return self.attributes.get(attr, default)


@attrs.define
class SoftToken:
    slot_id: int
    label: str
    serial: str
    pin: bytes = attrs.field(repr=False)
    present: bool = True
    objects: dict[int, SoftObject] = attrs.field(factory=dict, repr=False)


@attrs.define
class _Session:
    app: SoftApplication
    slot_id: int
    read_write: bool


class SoftBackend:
    """Tokens in memory; `connect` gives each application its own login state."""

    def __init__(self, tokens: Sequence[tuple[str, str, str]] = (("app", "1001", "1234"),)):
        self.tokens: dict[int, SoftToken] = {}
        self.sessions: dict[int, _Session] = {}
        self.calls: list[str] = []
        self._session_ids = itertools.count(1)
        self._object_ids = itertools.count(1)
        for label, serial, pin in tokens:
            self.add_token(label, serial, pin)

    def add_token(self, label: str, serial: str, pin: str) -> SoftToken:
        slot_id = len(self.tokens)
        token = SoftToken(slot_id, label, serial, pin.encode())
        self.tokens[slot_id] = token
        return token

    async def connect(self) -> SoftApplication:
        return SoftApplication(self)

    def new_object_id(self) -> int:
        return next(self._object_ids)

    def new_session_id(self) -> int:
        return next(self._session_ids)


class SoftApplication:
    """One application's view of the soft tokens (implements `Application`)."""

    def __init__(self, backend: SoftBackend) -> None:
        self._backend = backend
        self._logins: dict[int, int] = {}  # slot id -> user type

    # -- slots and sessions ------------------------------------------------------------
    def _token(self, slot_id: int) -> SoftToken:
        token = self._backend.tokens.get(slot_id)
        if token is None:
            raise Pkcs11Error(CKR.SLOT_ID_INVALID, f"slot {slot_id} does not exist")
        if not token.present:
            raise Pkcs11Error(CKR.TOKEN_NOT_PRESENT, f"the token of slot {slot_id} is away")
        return token

    def _session(self, session: int) -> _Session:
        found = self._backend.sessions.get(session)
        if found is None or found.app is not self:
            raise Pkcs11Error(CKR.SESSION_HANDLE_INVALID, f"session {session} is not open")
        return found

    async def slots(self) -> Sequence[SlotInfo]:
        self._backend.calls.append("slots")
        return [SlotInfo(t.slot_id, f"soft token {t.label} (serial {t.serial})", t.present)
                for t in self._backend.tokens.values()]  # fmt: skip

    async def token_info(self, slot_id: int) -> TokenInfo:
        token = self._token(slot_id)
        flags = (CKF_TOKEN.RNG | CKF_TOKEN.LOGIN_REQUIRED | CKF_TOKEN.USER_PIN_INITIALIZED
                 | CKF_TOKEN.TOKEN_INITIALIZED)  # fmt: skip
        return TokenInfo(label=token.label, serial=token.serial, model="soft token", flags=flags)

    async def mechanisms(self, slot_id: int) -> Sequence[MechanismInfo]:
        self._token(slot_id)
        return MECHANISMS

    async def open_session(self, slot_id: int, read_write: bool) -> int:
        self._backend.calls.append("open_session")
        self._token(slot_id)
        handle = self._backend.new_session_id()
        self._backend.sessions[handle] = _Session(self, slot_id, read_write)
        return handle

    async def session_info(self, session: int) -> SessionInfo:
        found = self._session(session)
        user = found.slot_id in self._logins
        if found.read_write:
            state = CKS_RW_USER_FUNCTIONS if user else CKS_RW_PUBLIC_SESSION
        else:
            state = CKS_RO_USER_FUNCTIONS if user else CKS_RO_PUBLIC_SESSION
        flags = CKF.SERIAL_SESSION | (CKF.RW_SESSION if found.read_write else 0)
        return SessionInfo(found.slot_id, state, flags)

    async def close_session(self, session: int) -> None:
        self._backend.calls.append("close_session")
        found = self._session(session)
        del self._backend.sessions[session]
        token = self._backend.tokens[found.slot_id]
        for handle in [h for h, o in token.objects.items() if o.owner_session == session]:
            del token.objects[handle]
        if not any(s.app is self and s.slot_id == found.slot_id
                   for s in self._backend.sessions.values()):  # fmt: skip
            self._logins.pop(found.slot_id, None)  # the last session logs the user out

    async def close_all_sessions(self, slot_id: int) -> None:
        self._token(slot_id)
        for handle, found in list(self._backend.sessions.items()):
            if found.app is self and found.slot_id == slot_id:
                await self.close_session(handle)

    async def close(self) -> None:
        for handle, found in list(self._backend.sessions.items()):
            if found.app is self:
                await self.close_session(handle)
        self._logins.clear()

    # -- login -------------------------------------------------------------------------
    async def login(self, session: int, user_type: int, pin: bytearray) -> None:
        self._backend.calls.append("login")
        try:
            found = self._session(session)
            if user_type not in (CKU.USER, CKU.CRYPTO_USER):
                raise Pkcs11Error(CKR.USER_TYPE_INVALID, "log in as CKU_USER (the Crypto Officer)")
            current = self._logins.get(found.slot_id)
            if current == user_type:
                raise Pkcs11Error(CKR.USER_ALREADY_LOGGED_IN, "this application is logged in")
            if current is not None:
                raise Pkcs11Error(CKR.USER_ANOTHER_ALREADY_LOGGED_IN, "log out the other first")
            if not hmac.compare_digest(bytes(pin), self._backend.tokens[found.slot_id].pin):
                raise Pkcs11Error(CKR.PIN_INCORRECT, "the PIN is not this token's")
            self._logins[found.slot_id] = user_type
        finally:
            pin[:] = bytes(len(pin))

    async def logout(self, session: int) -> None:
        found = self._session(session)
        if self._logins.pop(found.slot_id, None) is None:
            raise Pkcs11Error(CKR.USER_NOT_LOGGED_IN, "this application is not logged in")

    # -- objects -----------------------------------------------------------------------
    def _visible(self, found: _Session, obj: SoftObject) -> bool:
        return not obj.get(CKA.PRIVATE, False) or found.slot_id in self._logins

    def _object(self, session: int, handle: int, rv: int = CKR.OBJECT_HANDLE_INVALID) -> SoftObject:
        found = self._session(session)
        obj = self._backend.tokens[found.slot_id].objects.get(handle)
        if obj is None or not self._visible(found, obj):
            raise Pkcs11Error(rv, f"no object {handle} visible in session {session}")
        return obj

    def _store(self, session: int, attributes: dict[int, AttrValue], key: Key) -> int:
        found = self._session(session)
        token_object = bool(attributes.get(CKA.TOKEN, False))
        if token_object and not found.read_write:
            raise Pkcs11Error(CKR.SESSION_READ_ONLY, "token objects need a read-write session")
        handle = self._backend.new_object_id()
        owner = None if token_object else session
        self._backend.tokens[found.slot_id].objects[handle] = SoftObject(attributes, key, owner)
        return handle

    async def find_objects(self, session: int, template: Sequence[Attribute]) -> Sequence[int]:
        self._backend.calls.append("find_objects")
        found = self._session(session)
        return [h for h, o in self._backend.tokens[found.slot_id].objects.items()
                if self._visible(found, o)
                and all(o.get(a.type) == a.value for a in template)]  # fmt: skip

    async def get_attributes(
        self, session: int, handle: int, types: Sequence[int]
    ) -> Sequence[AttributeResult]:
        self._backend.calls.append("get_attributes")
        obj = self._object(session, handle)
        results = []
        for attr in types:
            value = obj.get(attr)
            secret = obj.get(CKA.SENSITIVE, False) or not obj.get(CKA.EXTRACTABLE, True)
            if attr == CKA.VALUE and obj.get(CKA.CLASS) != CKO.PUBLIC_KEY and secret:
                results.append(AttributeResult(attr, None, CKR.ATTRIBUTE_SENSITIVE))
            elif value is None:
                results.append(AttributeResult(attr, None, CKR.ATTRIBUTE_TYPE_INVALID))
            else:
                results.append(AttributeResult(attr, value))
        return results

    async def destroy_object(self, session: int, handle: int) -> None:
        self._backend.calls.append("destroy_object")
        obj = self._object(session, handle)
        found = self._session(session)
        if obj.get(CKA.TOKEN, False) and not found.read_write:
            raise Pkcs11Error(CKR.SESSION_READ_ONLY, "destroying token objects needs read-write")
        if not obj.get(CKA.DESTROYABLE, True):
            raise Pkcs11Error(CKR.ACTION_PROHIBITED, f"object {handle} is not destroyable")
        del self._backend.tokens[found.slot_id].objects[handle]

    # -- key generation ----------------------------------------------------------------
    def _require_login(self, session: int) -> None:
        if self._session(session).slot_id not in self._logins:
            raise Pkcs11Error(CKR.USER_NOT_LOGGED_IN, "log in (C_Login) before using keys")

    async def generate_key(
        self, session: int, mechanism: Mechanism, template: Sequence[Attribute]
    ) -> int:
        self._backend.calls.append("generate_key")
        self._require_login(session)
        given = {a.type: a.value for a in template}
        length = given.get(CKA.VALUE_LEN)
        if mechanism.mechanism == CKM.AES_KEY_GEN:
            key_type, length = CKK.AES, 32 if length is None else length
            if length not in (16, 24, 32):
                raise Pkcs11Error(CKR.KEY_SIZE_RANGE, "AES keys are 16, 24 or 32 bytes")
            uses: dict[int, AttrValue] = {CKA.ENCRYPT: True, CKA.DECRYPT: True}
        elif mechanism.mechanism == CKM.GENERIC_SECRET_KEY_GEN:
            if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= 512:
                raise Pkcs11Error(CKR.TEMPLATE_INCOMPLETE, "give CKA_VALUE_LEN (1-512 bytes)")
            key_type = CKK.GENERIC_SECRET
            uses = {CKA.SIGN: True, CKA.VERIFY: True}
        else:
            raise Pkcs11Error(CKR.MECHANISM_INVALID, "secret keys: AES-KEY-GEN, GENERIC-SECRET")
        assert isinstance(length, int)
        attributes = _private_defaults(CKO.SECRET_KEY, key_type, mechanism.mechanism, given)
        attributes = {**attributes, **uses, **given, CKA.VALUE_LEN: length}
        _check_secret(attributes)
        return self._store(session, attributes, os.urandom(length))

    async def generate_key_pair(
        self,
        session: int,
        mechanism: Mechanism,
        public_template: Sequence[Attribute],
        private_template: Sequence[Attribute],
    ) -> tuple[int, int]:
        self._backend.calls.append("generate_key_pair")
        self._require_login(session)
        public_given = {a.type: a.value for a in public_template}
        private_given = {a.type: a.value for a in private_template}
        params = public_given.get(CKA.EC_PARAMS)
        private: Key
        if mechanism.mechanism == CKM.EC_KEY_PAIR_GEN:
            if params != P256_PARAMS:
                raise Pkcs11Error(CKR.TEMPLATE_INCONSISTENT, "EC keys: CKA_EC_PARAMS prime256v1")
            key_type, private = CKK.EC, ec.generate_private_key(ec.SECP256R1())
            point = private.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        elif mechanism.mechanism == CKM.EC_EDWARDS_KEY_PAIR_GEN:
            if params not in ED25519_PARAMS:
                raise Pkcs11Error(CKR.TEMPLATE_INCONSISTENT, "Edwards keys: edwards25519 only")
            key_type, private = CKK.EC_EDWARDS, ed25519.Ed25519PrivateKey.generate()
            point = private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        else:
            raise Pkcs11Error(CKR.MECHANISM_INVALID, "key pairs: EC-KEY-PAIR-GEN, EC-EDWARDS")
        assert isinstance(params, bytes)
        public_attrs = {
            **_common(CKO.PUBLIC_KEY, key_type, mechanism.mechanism),
            CKA.PRIVATE: False, CKA.VERIFY: True, **public_given,
            CKA.EC_PARAMS: params, CKA.EC_POINT: bytes([0x04, len(point)]) + point,
        }  # fmt: skip
        private_attrs = {
            **_private_defaults(CKO.PRIVATE_KEY, key_type, mechanism.mechanism, private_given),
            CKA.SIGN: True, **private_given, CKA.EC_PARAMS: params,
        }  # fmt: skip
        _check_secret(private_attrs)
        public_handle = self._store(session, public_attrs, private.public_key())
        return public_handle, self._store(session, private_attrs, private)

    # -- use ---------------------------------------------------------------------------
    def _key_for(self, session: int, handle: int, use: CKA, key_type: int) -> SoftObject:
        self._require_login(session)
        obj = self._object(session, handle, CKR.KEY_HANDLE_INVALID)
        if obj.get(CKA.KEY_TYPE) != key_type:
            raise Pkcs11Error(CKR.KEY_TYPE_INCONSISTENT, f"key {handle} is not for this mechanism")
        if not obj.get(use, False):
            raise Pkcs11Error(CKR.KEY_FUNCTION_NOT_PERMITTED, f"key {handle} lacks {use.name}")
        return obj

    async def sign(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        self._backend.calls.append("sign")
        obj = self._key_for(session, key, CKA.SIGN, _signing_key_type(mechanism))
        secret = obj.key
        if isinstance(secret, ec.EllipticCurvePrivateKey):
            if mechanism.mechanism == CKM.ECDSA_SHA256:
                der = secret.sign(data, ec.ECDSA(hashes.SHA256()))
            else:
                der = secret.sign(_as_digest(data), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
            r, s = utils.decode_dss_signature(der)
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        if isinstance(secret, ed25519.Ed25519PrivateKey):
            return secret.sign(data)
        if isinstance(secret, bytes):
            return hmac.new(secret, data, sha256).digest()
        raise Pkcs11Error(CKR.KEY_FUNCTION_NOT_PERMITTED, f"key {key} cannot sign")

    async def verify(
        self, session: int, mechanism: Mechanism, key: int, data: bytes, signature: bytes
    ) -> None:
        self._backend.calls.append("verify")
        obj = self._key_for(session, key, CKA.VERIFY, _signing_key_type(mechanism))
        public: Key = obj.key
        if isinstance(public, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            public = public.public_key()
        expected = 32 if isinstance(public, bytes) else 64
        if len(signature) != expected:
            raise Pkcs11Error(CKR.SIGNATURE_LEN_RANGE, f"signatures here are {expected} bytes")
        try:
            if isinstance(public, ec.EllipticCurvePublicKey):
                der = utils.encode_dss_signature(
                    int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
                )
                if mechanism.mechanism == CKM.ECDSA_SHA256:
                    public.verify(der, data, ec.ECDSA(hashes.SHA256()))
                else:
                    public.verify(der, _as_digest(data), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
            elif isinstance(public, ed25519.Ed25519PublicKey):
                public.verify(signature, data)
            elif isinstance(public, bytes):
                if not hmac.compare_digest(hmac.new(public, data, sha256).digest(), signature):
                    raise InvalidSignature
        except InvalidSignature:
            raise Pkcs11Error(CKR.SIGNATURE_INVALID, "the signature does not match") from None

    def _gcm(
        self, session: int, mechanism: Mechanism, key: int, use: CKA
    ) -> tuple[AESGCM, GcmParams]:
        if mechanism.mechanism != CKM.AES_GCM:
            raise Pkcs11Error(CKR.MECHANISM_INVALID, "encryption here is AES-GCM only")
        params = mechanism.parameter
        if not isinstance(params, GcmParams) or params.tag_bits != 128 or not params.iv:
            raise Pkcs11Error(CKR.MECHANISM_PARAM_INVALID, "AES-GCM needs an IV and 128-bit tags")
        obj = self._key_for(session, key, use, CKK.AES)
        assert isinstance(obj.key, bytes)
        return AESGCM(obj.key), params

    async def encrypt(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        self._backend.calls.append("encrypt")
        cipher, params = self._gcm(session, mechanism, key, CKA.ENCRYPT)
        return cipher.encrypt(params.iv, data, params.aad)

    async def decrypt(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        self._backend.calls.append("decrypt")
        cipher, params = self._gcm(session, mechanism, key, CKA.DECRYPT)
        try:
            return cipher.decrypt(params.iv, data, params.aad)
        except InvalidTag:
            raise Pkcs11Error(CKR.ENCRYPTED_DATA_INVALID, "the tag does not match") from None

    async def generate_random(self, session: int, length: int) -> bytes:
        self._backend.calls.append("generate_random")
        self._session(session)
        return os.urandom(length)


def _common(cls: int, key_type: int, mechanism: int) -> dict[int, AttrValue]:
    return {CKA.CLASS: cls, CKA.KEY_TYPE: key_type, CKA.TOKEN: False, CKA.LABEL: b"",
            CKA.ID: b"", CKA.LOCAL: True, CKA.KEY_GEN_MECHANISM: mechanism,
            CKA.MODIFIABLE: False, CKA.DESTROYABLE: True, CKA.ENCRYPT: False,
            CKA.DECRYPT: False, CKA.WRAP: False, CKA.UNWRAP: False, CKA.SIGN: False,
            CKA.VERIFY: False, CKA.DERIVE: False}  # fmt: skip


def _private_defaults(
    cls: int, key_type: int, mechanism: int, given: dict[int, AttrValue]
) -> dict[int, AttrValue]:
    return {**_common(cls, key_type, mechanism), CKA.PRIVATE: True, CKA.SENSITIVE: True,
            CKA.EXTRACTABLE: False, CKA.ALWAYS_SENSITIVE: True,
            CKA.NEVER_EXTRACTABLE: True, CKA.ALWAYS_AUTHENTICATE: False}  # fmt: skip


def _check_secret(attributes: dict[int, AttrValue]) -> None:
    """Private and secret keys are sensitive and never extractable, whatever was asked."""
    if attributes.get(CKA.SENSITIVE) is not True or attributes.get(CKA.EXTRACTABLE) is not False:
        raise Pkcs11Error(
            CKR.TEMPLATE_INCONSISTENT,
            "private and secret keys are sensitive and never extractable here; drop "
            "CKA_SENSITIVE=false / CKA_EXTRACTABLE=true from the template",
        )
    if attributes.get(CKA.PRIVATE) is not True:
        raise Pkcs11Error(CKR.TEMPLATE_INCONSISTENT, "private and secret keys are private here")


def _signing_key_type(mechanism: Mechanism) -> int:
    key_type = _SIGNING.get(CKM(mechanism.mechanism)) if mechanism.mechanism in _SIGNING else None
    if key_type is None:
        raise Pkcs11Error(CKR.MECHANISM_INVALID, "signing: ECDSA, ECDSA-SHA256, EDDSA, HMAC")
    return key_type


def _as_digest(data: bytes) -> bytes:
    """Raw ECDSA signs a digest: cut to the curve's 32 bytes, or left-pad a short one."""
    return data[:32].rjust(32, b"\x00")
