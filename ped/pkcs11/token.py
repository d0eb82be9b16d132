"""The contract of the client path: what an application's PKCS#11 calls become in Python.

Theory of operation
-------------------
Three parts meet here and nowhere else:

* hsmclient's p11-kit RPC server (``hsmclient.p11kit``) decodes an application's calls and
  calls an `Application` (one per application connection: PKCS#11 login state belongs to
  the application, so it lives there);
* hsmclient's backend implements `Backend`/`Application` over its mutual-TLS links to the
  HSMs (``ped.ntls`` is the protocol), mapping its stable slot ids to (HSM, partition
  serial);
* pedhsm's client listener serves each TLS connection with a `PartitionAccess` built for
  the registered client at the other end: the same calls, partitions named by serial.

Every method either returns its result or raises `Pkcs11Error` carrying the PKCS#11
return value the application must see and a message that names what was wrong and what
to do.  Nothing secret is ever in a message, a repr or a log line: PINs (challenge
secrets) arrive as ``bytearray`` that the callee wipes; key values never leave the HSM
(sensitive keys have no readable CKA_VALUE).

Multi-part operations (``C_SignUpdate``...) are gathered by the p11-kit layer and reach
these methods as one call: what crosses the network is one request per operation.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol

import attrs

from ped.errors import PedError
from ped.pkcs11.constants import CKA, CKR, name_of


class Pkcs11Error(PedError):
    """A PKCS#11 call failed: `rv` is what the application sees; the text says why, what to do."""

    def __init__(self, rv: int, message: str) -> None:
        super().__init__(f"{name_of(CKR, rv)}: {message}")
        self.rv = rv
        self.reason = message  # without the return value's name: to re-raise under another


class AttrKind(enum.Enum):
    """How an attribute's value is typed (decides its encoding in every codec)."""

    BOOL = "bool"  # CK_BBOOL
    ULONG = "ulong"  # CK_ULONG (and CK_OBJECT_CLASS, CK_KEY_TYPE, CK_MECHANISM_TYPE)
    BYTES = "bytes"  # byte arrays and UTF-8 strings (labels)


_BOOLS = {
    CKA.TOKEN, CKA.PRIVATE, CKA.SENSITIVE, CKA.ENCRYPT, CKA.DECRYPT, CKA.WRAP, CKA.UNWRAP,
    CKA.SIGN, CKA.SIGN_RECOVER, CKA.VERIFY, CKA.VERIFY_RECOVER, CKA.DERIVE, CKA.EXTRACTABLE,
    CKA.LOCAL, CKA.NEVER_EXTRACTABLE, CKA.ALWAYS_SENSITIVE, CKA.MODIFIABLE, CKA.COPYABLE,
    CKA.DESTROYABLE, CKA.ALWAYS_AUTHENTICATE,
}  # fmt: skip
_ULONGS = {CKA.CLASS, CKA.KEY_TYPE, CKA.VALUE_LEN, CKA.MODULUS_BITS, CKA.KEY_GEN_MECHANISM}


def attr_kind(attr_type: int) -> AttrKind:
    """The kind of an attribute type; types the project does not name are byte arrays."""
    if attr_type in _BOOLS:
        return AttrKind.BOOL
    if attr_type in _ULONGS:
        return AttrKind.ULONG
    return AttrKind.BYTES


AttrValue = bool | int | bytes


@attrs.frozen
class Attribute:
    """One attribute of a template or an object; `value`'s Python type follows `attr_kind`."""

    type: int
    value: AttrValue = attrs.field(repr=False)  # may be a public key or a label; never a secret


@attrs.frozen
class AttributeResult:
    """One answer of C_GetAttributeValue: a value, or the reason there is none.

    `rv` is CKR.OK with a value, CKR.ATTRIBUTE_SENSITIVE (a secret's CKA_VALUE) or
    CKR.ATTRIBUTE_TYPE_INVALID (the object has no such attribute) with ``value=None``.
    """

    type: int
    value: AttrValue | None = attrs.field(repr=False)
    rv: int = CKR.OK


@attrs.frozen
class GcmParams:
    """CK_GCM_PARAMS: the IV, the additional data and the tag length in bits."""

    iv: bytes
    aad: bytes = b""
    tag_bits: int = 128


@attrs.frozen
class Mechanism:
    """A mechanism and its parameter: none, raw bytes (as the RPC carried them) or GCM's."""

    mechanism: int
    parameter: bytes | GcmParams | None = None


@attrs.frozen
class MechanismInfo:
    """CK_MECHANISM_INFO of one mechanism."""

    mechanism: int
    min_key_size: int
    max_key_size: int
    flags: int


@attrs.frozen
class SlotInfo:
    """CK_SLOT_INFO and where the slot leads (hsmclient's view)."""

    slot_id: int
    description: str  # e.g. "hsm1 partition app (serial 154438865000123)"
    token_present: bool  # False while the HSM is unreachable or the partition gone


@attrs.frozen
class TokenInfo:
    """CK_TOKEN_INFO of a partition, as far as an application needs it."""

    label: str  # the partition name (at most 32 bytes on the wire, space padded)
    serial: str  # the partition serial (at most 16 bytes on the wire)
    model: str = "pedhsm partition"
    manufacturer: str = "remote-ped project"
    flags: int = 0  # CKF_TOKEN
    max_pin_len: int = 256
    min_pin_len: int = 1


@attrs.frozen
class SessionInfo:
    """CK_SESSION_INFO: the slot, the PKCS#11 state number (CKS_*) and flags."""

    slot_id: int
    state: int
    flags: int


@attrs.frozen
class PartitionInfo:
    """A partition as a registered client sees it (pedhsm -> hsmclient)."""

    serial: str
    label: str
    initialised: bool
    activated: bool  # the role an application logs in as is activated (challenge accepted)
    #: ...and stays activated across restarts (partition policy 23 on when it was
    #: activated).  Only a version-2 connection carries it: on version 1 it reads False.
    auto_activation: bool = False


class Session(Protocol):
    """The calls on an open session, shared by both sides of the network."""

    async def login(self, session: int, user_type: int, pin: bytearray) -> None: ...
    async def logout(self, session: int) -> None: ...
    async def close_session(self, session: int) -> None: ...
    async def generate_key(
        self, session: int, mechanism: Mechanism, template: Sequence[Attribute]
    ) -> int: ...
    async def generate_key_pair(
        self,
        session: int,
        mechanism: Mechanism,
        public_template: Sequence[Attribute],
        private_template: Sequence[Attribute],
    ) -> tuple[int, int]: ...
    async def find_objects(self, session: int, template: Sequence[Attribute]) -> Sequence[int]: ...
    async def get_attributes(
        self, session: int, handle: int, types: Sequence[int]
    ) -> Sequence[AttributeResult]: ...
    async def destroy_object(self, session: int, handle: int) -> None: ...
    async def sign(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes: ...
    async def verify(
        self, session: int, mechanism: Mechanism, key: int, data: bytes, signature: bytes
    ) -> None: ...
    async def encrypt(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes: ...
    async def decrypt(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes: ...
    async def generate_random(self, session: int, length: int) -> bytes: ...


class Application(Session, Protocol):
    """One application's view of hsmclient's slots (one per p11-kit connection)."""

    async def slots(self) -> Sequence[SlotInfo]: ...
    async def token_info(self, slot_id: int) -> TokenInfo: ...
    async def mechanisms(self, slot_id: int) -> Sequence[MechanismInfo]: ...
    async def open_session(self, slot_id: int, read_write: bool) -> int: ...
    async def session_info(self, session: int) -> SessionInfo: ...
    async def close_all_sessions(self, slot_id: int) -> None: ...
    async def close(self) -> None:
        """The application went away: close its sessions, forget its login."""
        ...


class Backend(Protocol):
    """hsmclient's side: a new `Application` for each application connection."""

    async def connect(self) -> Application: ...


class PartitionAccess(Session, Protocol):
    """pedhsm's side: one registered client's TLS connection (partitions by serial)."""

    def partitions(self) -> Sequence[PartitionInfo]:
        """The partitions assigned to this client (others are invisible to it)."""
        ...

    async def token_info(self, serial: str) -> TokenInfo: ...
    async def mechanisms(self, serial: str) -> Sequence[MechanismInfo]: ...
    async def open_session(self, serial: str, read_write: bool) -> int: ...
    async def close(self) -> None:
        """The connection ended: close its sessions and log its logins out (never counted)."""
        ...


#: The PKCS#11 session states (CK_STATE) an application sees in C_GetSessionInfo.
CKS_RO_PUBLIC_SESSION = 0
CKS_RO_USER_FUNCTIONS = 1
CKS_RW_PUBLIC_SESSION = 2
CKS_RW_USER_FUNCTIONS = 3
