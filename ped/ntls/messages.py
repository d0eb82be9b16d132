"""The messages of the client protocol (hsmclient <-> pedhsm, port 1792).

Seven frame types (the ``RP`` envelope of ``ped.wire.framing``, types 0x70-0x76; their
bytes are ``ped.ntls.frames``'): ``Hello``/``Welcome``/``Refused`` open a connection,
``Close`` ends it, a ``REQUEST`` frame carries one call of
``ped.pkcs11.token.PartitionAccess`` (an `Op` and its arguments) or one step of a clone
between two HSMs (`CloneOpen`, `CloneFrame`: cloning frames relayed as opaque bytes; `Archive`:
the ends of a backup HSM's backup and restore), and
a ``RESULT`` or ``FAILURE`` frame answers the request with the same request id.  Every
request and result is a frozen attrs class; a request's ``OP`` names the call.

Secrets: a `Login`'s challenge is a ``bytearray``, never in a repr; sign, encrypt and
decrypt data and outputs are never in a repr either.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import ClassVar

import attrs

from ped.pkcs11.token import (
    Attribute,
    AttributeResult,
    Mechanism,
    MechanismInfo,
    PartitionInfo,
    TokenInfo,
)

NTLS_VERSION_MIN = 1
NTLS_VERSION_MAX = 2
#: The first version whose partition info carries bit 2 (auto-activation).
NTLS_VERSION_AUTO_ACTIVATION = 2
DEFAULT_NTLS_PORT = 1792
MAX_TEXT = 1024  # a failure or close message
MAX_SOFTWARE = 64
MAX_IN_FLIGHT = 32  # requests one connection may have unanswered


class FrameType(enum.IntEnum):
    HELLO = 0x70
    WELCOME = 0x71
    REFUSED = 0x72
    CLOSE = 0x73
    REQUEST = 0x74
    RESULT = 0x75
    FAILURE = 0x76


NTLS_TYPES = frozenset(int(t) for t in FrameType)


class Op(enum.IntEnum):
    """The calls of `PartitionAccess` (one request each)."""

    LIST_PARTITIONS = 1
    TOKEN_INFO = 2
    MECHANISMS = 3
    OPEN_SESSION = 4
    CLOSE_SESSION = 5
    LOGIN = 6
    LOGOUT = 7
    GENERATE_KEY = 8
    GENERATE_KEY_PAIR = 9
    FIND_OBJECTS = 10
    GET_ATTRIBUTES = 11
    DESTROY_OBJECT = 12
    SIGN = 13
    VERIFY = 14
    ENCRYPT = 15
    DECRYPT = 16
    GENERATE_RANDOM = 17
    CLONE_OPEN = 18
    CLONE_FRAME = 19
    ARCHIVE = 20


class CloneRole(enum.IntEnum):
    """Which end of a clone a `CloneOpen` makes this session's partition."""

    SOURCE = 1
    TARGET = 2


#: Objects one `CloneOpen` may name (all their frames travel in one `Output`).
MAX_CLONE_HANDLES = 64


class ArchiveAction(enum.IntEnum):
    """What an `Archive` request does (docs/protocol/client.md, op 20)."""

    LIST = 1  # the backup HSM's backup partitions (JSON)
    DELETE = 2  # delete one backup partition
    BACKUP_SOURCE = 3  # a partition sends its objects to a backup partition
    BACKUP_TARGET = 4  # the backup HSM receives them (answers the backup partition's serial)
    RESTORE_SOURCE = 5  # the backup HSM sends a backup partition's objects
    RESTORE_TARGET = 6  # a partition receives them


class ArchiveMode(enum.IntEnum):
    """How the receiving end treats what it holds already."""

    NEW = 0  # a new backup partition (refused if the name exists)
    ADD = 1  # keep what is there, add what is missing (--append / --add)
    REPLACE = 2  # drop what is there, in the same transaction (--replace)


#: Labels one `Archive` request may name; the length of a backup partition's name.
MAX_ARCHIVE_LABELS = 64
MAX_ARCHIVE_NAME = 32
MAX_ARCHIVE_LABEL = 256


class NtlsCloseCode(enum.IntEnum):
    NORMAL = 0
    IDLE_TIMEOUT = 1
    SHUTTING_DOWN = 2
    PROTOCOL_ERROR = 3


class NtlsRefuseCode(enum.IntEnum):
    UNSUPPORTED_VERSION = 1
    TOO_MANY_CONNECTIONS = 2
    SHUTTING_DOWN = 3


# ---- opening and closing ----------------------------------------------------------------


@attrs.frozen
class Hello:
    """hsmclient's first frame: the protocol versions it speaks and what it is."""

    TYPE: ClassVar[FrameType] = FrameType.HELLO
    version_min: int = NTLS_VERSION_MIN
    version_max: int = NTLS_VERSION_MAX
    software: str = "hsmclient"


@attrs.frozen
class Welcome:
    """pedhsm's answer: the version chosen, how many requests may be in flight, its serial."""

    TYPE: ClassVar[FrameType] = FrameType.WELCOME
    version: int
    max_in_flight: int
    hsm_serial: str


@attrs.frozen
class Refused:
    TYPE: ClassVar[FrameType] = FrameType.REFUSED
    code: NtlsRefuseCode
    message: str


@attrs.frozen
class Close:
    TYPE: ClassVar[FrameType] = FrameType.CLOSE
    code: NtlsCloseCode
    message: str = ""


# ---- requests -----------------------------------------------------------------------


@attrs.frozen
class ListPartitions:
    OP: ClassVar[Op] = Op.LIST_PARTITIONS
    request_id: int


@attrs.frozen
class GetTokenInfo:
    OP: ClassVar[Op] = Op.TOKEN_INFO
    request_id: int
    serial: str


@attrs.frozen
class GetMechanisms:
    OP: ClassVar[Op] = Op.MECHANISMS
    request_id: int
    serial: str


@attrs.frozen
class OpenSession:
    OP: ClassVar[Op] = Op.OPEN_SESSION
    request_id: int
    serial: str
    read_write: bool


@attrs.frozen
class CloseSession:
    OP: ClassVar[Op] = Op.CLOSE_SESSION
    request_id: int
    session: int


@attrs.frozen
class Login:
    """C_Login: the challenge secret travels only here, inside TLS; wipe `pin` after use."""

    OP: ClassVar[Op] = Op.LOGIN
    request_id: int
    session: int
    user_type: int
    pin: bytearray = attrs.field(repr=False, eq=False)


@attrs.frozen
class Logout:
    OP: ClassVar[Op] = Op.LOGOUT
    request_id: int
    session: int


@attrs.frozen
class GenerateKey:
    OP: ClassVar[Op] = Op.GENERATE_KEY
    request_id: int
    session: int
    mechanism: Mechanism
    template: tuple[Attribute, ...]


@attrs.frozen
class GenerateKeyPair:
    OP: ClassVar[Op] = Op.GENERATE_KEY_PAIR
    request_id: int
    session: int
    mechanism: Mechanism
    public_template: tuple[Attribute, ...]
    private_template: tuple[Attribute, ...]


@attrs.frozen
class FindObjects:
    OP: ClassVar[Op] = Op.FIND_OBJECTS
    request_id: int
    session: int
    template: tuple[Attribute, ...]


@attrs.frozen
class GetAttributes:
    OP: ClassVar[Op] = Op.GET_ATTRIBUTES
    request_id: int
    session: int
    handle: int
    types: tuple[int, ...]


@attrs.frozen
class DestroyObject:
    OP: ClassVar[Op] = Op.DESTROY_OBJECT
    request_id: int
    session: int
    handle: int


@attrs.frozen
class Sign:
    """C_Sign: a mechanism, a key handle and data (never shown)."""

    OP: ClassVar[Op] = Op.SIGN
    request_id: int
    session: int
    mechanism: Mechanism
    key: int
    data: bytes = attrs.field(repr=False)


@attrs.frozen
class Encrypt:
    """C_Encrypt: a mechanism, a key handle and data (never shown)."""

    OP: ClassVar[Op] = Op.ENCRYPT
    request_id: int
    session: int
    mechanism: Mechanism
    key: int
    data: bytes = attrs.field(repr=False)


@attrs.frozen
class Decrypt:
    """C_Decrypt: a mechanism, a key handle and data (never shown)."""

    OP: ClassVar[Op] = Op.DECRYPT
    request_id: int
    session: int
    mechanism: Mechanism
    key: int
    data: bytes = attrs.field(repr=False)


@attrs.frozen
class Verify:
    OP: ClassVar[Op] = Op.VERIFY
    request_id: int
    session: int
    mechanism: Mechanism
    key: int
    data: bytes = attrs.field(repr=False)
    signature: bytes = attrs.field(repr=False)


@attrs.frozen
class GenerateRandom:
    OP: ClassVar[Op] = Op.GENERATE_RANDOM
    request_id: int
    session: int
    length: int


@attrs.frozen
class CloneOpen:
    """Make this session's partition one end of a clone with the partition *peer_serial*.

    As the source it names the objects (*handles*) and answers the first cloning frame;
    as the target *handles* is empty and it answers nothing yet.
    """

    OP: ClassVar[Op] = Op.CLONE_OPEN
    request_id: int
    session: int
    role: CloneRole
    peer_serial: str
    handles: tuple[int, ...]


@attrs.frozen
class CloneFrame:
    """Cloning frames from the other HSM, relayed unread; the answer carries this HSM's."""

    OP: ClassVar[Op] = Op.CLONE_FRAME
    request_id: int
    session: int
    frames: bytes = attrs.field(repr=False)


@attrs.frozen
class Archive:
    """One step of a backup HSM's ``partition archive`` command on this session.

    *name* is the backup partition's, *peer_serial* the other end's partition serial,
    *labels* (BACKUP_SOURCE only) the labels of the objects backed up (none: all).
    """

    OP: ClassVar[Op] = Op.ARCHIVE
    request_id: int
    session: int
    action: ArchiveAction
    mode: ArchiveMode
    peer_serial: str
    name: str
    labels: tuple[str, ...] = ()


KeyOperation = Sign | Encrypt | Decrypt
Request = (
    ListPartitions | GetTokenInfo | GetMechanisms | OpenSession | CloseSession | Login | Logout
    | GenerateKey | GenerateKeyPair | FindObjects | GetAttributes | DestroyObject | Sign
    | Verify | Encrypt | Decrypt | GenerateRandom | CloneOpen | CloneFrame | Archive
)  # fmt: skip


# ---- answers ------------------------------------------------------------------------


@attrs.frozen
class Done:
    """A call that returns nothing succeeded (close, login, logout, destroy, verify)."""

    request_id: int
    op: Op


@attrs.frozen
class Handle:
    """A call that returns one handle (open session, generate key)."""

    request_id: int
    op: Op
    handle: int


@attrs.frozen
class KeyPair:
    request_id: int
    public: int
    private: int


@attrs.frozen
class Handles:
    request_id: int
    handles: tuple[int, ...]


@attrs.frozen
class Attributes:
    request_id: int
    results: tuple[AttributeResult, ...]


@attrs.frozen
class Output:
    """A call that returns bytes (sign, encrypt, decrypt, random, cloning frames): never shown."""

    request_id: int
    op: Op
    data: bytes = attrs.field(repr=False)


@attrs.frozen
class Partitions:
    request_id: int
    partitions: tuple[PartitionInfo, ...]


@attrs.frozen
class TokenInfoResult:
    request_id: int
    info: TokenInfo


@attrs.frozen
class Mechanisms:
    request_id: int
    infos: tuple[MechanismInfo, ...]


@attrs.frozen
class Failure:
    """The call failed: the PKCS#11 return value and the message the application sees."""

    request_id: int
    rv: int
    message: str


Result = (
    Done | Handle | KeyPair | Handles | Attributes | Output | Partitions | TokenInfoResult
    | Mechanisms
)  # fmt: skip
Answer = Result | Failure
Message = Hello | Welcome | Refused | Close | Request | Answer
#: What a caller hands a link: the request, given the request id the connection chose.
RequestBuilder = Callable[[int], Request]
REQUEST_TYPES: tuple[type, ...] = (
    ListPartitions, GetTokenInfo, GetMechanisms, OpenSession, CloseSession, Login, Logout,
    GenerateKey, GenerateKeyPair, FindObjects, GetAttributes, DestroyObject, Sign, Verify,
    Encrypt, Decrypt, GenerateRandom, CloneOpen, CloneFrame, Archive,
)  # fmt: skip

#: What each call answers when it succeeds (the shape of its RESULT frame).
RESULT_OF: dict[Op, type] = {
    Op.LIST_PARTITIONS: Partitions, Op.TOKEN_INFO: TokenInfoResult, Op.MECHANISMS: Mechanisms,
    Op.OPEN_SESSION: Handle, Op.CLOSE_SESSION: Done, Op.LOGIN: Done, Op.LOGOUT: Done,
    Op.GENERATE_KEY: Handle, Op.GENERATE_KEY_PAIR: KeyPair, Op.FIND_OBJECTS: Handles,
    Op.GET_ATTRIBUTES: Attributes, Op.DESTROY_OBJECT: Done, Op.SIGN: Output, Op.VERIFY: Done,
    Op.ENCRYPT: Output, Op.DECRYPT: Output, Op.GENERATE_RANDOM: Output,
    Op.CLONE_OPEN: Output, Op.CLONE_FRAME: Output, Op.ARCHIVE: Output,
}  # fmt: skip


def op_of(answer: Result) -> Op:
    """The call a successful answer belongs to."""
    if isinstance(answer, Done | Handle | Output):
        return answer.op
    return next(op for op, cls in RESULT_OF.items() if isinstance(answer, cls))
