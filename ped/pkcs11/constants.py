"""PKCS#11 numbers (return values, attributes, classes, key types, mechanisms, flags).

Only the numbers the client path uses are named here; the values are PKCS#11 v2.40/3.0's
(``pkcs11t.h``).  A number the project does not name still travels: codecs carry integers,
and `name_of` prints an unnamed one in hex so a log line never loses it.
"""

from __future__ import annotations

import enum


class CKR(enum.IntEnum):
    """Return values (``CK_RV``)."""

    OK = 0x000
    CANCEL = 0x001
    HOST_MEMORY = 0x002
    SLOT_ID_INVALID = 0x003
    GENERAL_ERROR = 0x005
    FUNCTION_FAILED = 0x006
    ARGUMENTS_BAD = 0x007
    ATTRIBUTE_READ_ONLY = 0x010
    ATTRIBUTE_SENSITIVE = 0x011
    ATTRIBUTE_TYPE_INVALID = 0x012
    ATTRIBUTE_VALUE_INVALID = 0x013
    ACTION_PROHIBITED = 0x01B
    DATA_INVALID = 0x020
    DATA_LEN_RANGE = 0x021
    DEVICE_ERROR = 0x030
    DEVICE_MEMORY = 0x031
    DEVICE_REMOVED = 0x032
    ENCRYPTED_DATA_INVALID = 0x040
    ENCRYPTED_DATA_LEN_RANGE = 0x041
    FUNCTION_CANCELED = 0x050
    FUNCTION_NOT_SUPPORTED = 0x054
    KEY_HANDLE_INVALID = 0x060
    KEY_SIZE_RANGE = 0x062
    KEY_TYPE_INCONSISTENT = 0x063
    KEY_FUNCTION_NOT_PERMITTED = 0x068
    KEY_NOT_WRAPPABLE = 0x069
    KEY_UNEXTRACTABLE = 0x06A
    MECHANISM_INVALID = 0x070
    MECHANISM_PARAM_INVALID = 0x071
    OBJECT_HANDLE_INVALID = 0x082
    OPERATION_ACTIVE = 0x090
    OPERATION_NOT_INITIALIZED = 0x091
    PIN_INCORRECT = 0x0A0
    PIN_INVALID = 0x0A1
    PIN_LEN_RANGE = 0x0A2
    PIN_EXPIRED = 0x0A3
    PIN_LOCKED = 0x0A4
    SESSION_CLOSED = 0x0B0
    SESSION_COUNT = 0x0B1
    SESSION_HANDLE_INVALID = 0x0B3
    SESSION_PARALLEL_NOT_SUPPORTED = 0x0B4
    SESSION_READ_ONLY = 0x0B5
    SESSION_EXISTS = 0x0B6
    SESSION_READ_ONLY_EXISTS = 0x0B7
    SESSION_READ_WRITE_SO_EXISTS = 0x0B8
    SIGNATURE_INVALID = 0x0C0
    SIGNATURE_LEN_RANGE = 0x0C1
    TEMPLATE_INCOMPLETE = 0x0D0
    TEMPLATE_INCONSISTENT = 0x0D1
    TOKEN_NOT_PRESENT = 0x0E0
    TOKEN_NOT_RECOGNIZED = 0x0E1
    TOKEN_WRITE_PROTECTED = 0x0E2
    USER_ALREADY_LOGGED_IN = 0x100
    USER_NOT_LOGGED_IN = 0x101
    USER_PIN_NOT_INITIALIZED = 0x102
    USER_TYPE_INVALID = 0x103
    USER_ANOTHER_ALREADY_LOGGED_IN = 0x104
    USER_TOO_MANY_TYPES = 0x105
    RANDOM_SEED_NOT_SUPPORTED = 0x120
    RANDOM_NO_RNG = 0x121
    BUFFER_TOO_SMALL = 0x150
    CRYPTOKI_NOT_INITIALIZED = 0x190
    CRYPTOKI_ALREADY_INITIALIZED = 0x191
    CURVE_NOT_SUPPORTED = 0x140


class CKA(enum.IntEnum):
    """Attribute types (``CK_ATTRIBUTE_TYPE``)."""

    CLASS = 0x000
    TOKEN = 0x001
    PRIVATE = 0x002
    LABEL = 0x003
    VALUE = 0x011
    KEY_TYPE = 0x100
    ID = 0x102
    SENSITIVE = 0x103
    ENCRYPT = 0x104
    DECRYPT = 0x105
    WRAP = 0x106
    UNWRAP = 0x107
    SIGN = 0x108
    SIGN_RECOVER = 0x109
    VERIFY = 0x10A
    VERIFY_RECOVER = 0x10B
    DERIVE = 0x10C
    MODULUS_BITS = 0x121
    VALUE_LEN = 0x161
    EXTRACTABLE = 0x162
    LOCAL = 0x163
    NEVER_EXTRACTABLE = 0x164
    ALWAYS_SENSITIVE = 0x165
    KEY_GEN_MECHANISM = 0x166
    MODIFIABLE = 0x170
    COPYABLE = 0x171
    DESTROYABLE = 0x172
    EC_PARAMS = 0x180
    EC_POINT = 0x181
    ALWAYS_AUTHENTICATE = 0x202


class CKO(enum.IntEnum):
    """Object classes (``CK_OBJECT_CLASS``)."""

    DATA = 0
    CERTIFICATE = 1
    PUBLIC_KEY = 2
    PRIVATE_KEY = 3
    SECRET_KEY = 4


class CKK(enum.IntEnum):
    """Key types (``CK_KEY_TYPE``)."""

    RSA = 0x00
    EC = 0x03
    GENERIC_SECRET = 0x10
    AES = 0x1F
    EC_EDWARDS = 0x40


class CKM(enum.IntEnum):
    """Mechanism types (``CK_MECHANISM_TYPE``)."""

    SHA256_HMAC = 0x251
    SHA256 = 0x250
    GENERIC_SECRET_KEY_GEN = 0x350
    EC_KEY_PAIR_GEN = 0x1040
    ECDSA = 0x1041
    ECDSA_SHA256 = 0x1044
    EC_EDWARDS_KEY_PAIR_GEN = 0x1055
    EDDSA = 0x1057
    AES_KEY_GEN = 0x1080
    AES_GCM = 0x1087


class CKU(enum.IntEnum):
    """User types (``CK_USER_TYPE``): the partition's Crypto Officer is CKU_USER."""

    SO = 0
    USER = 1
    CONTEXT_SPECIFIC = 2
    # Luna's vendor-defined Crypto User (CKU_VENDOR_DEFINED | 1); p11-kit carries any number.
    CRYPTO_USER = 0x80000001


class CKF(enum.IntFlag):
    """Flags of slot, token, session and mechanism infos (each in its own structure)."""

    # CK_SLOT_INFO
    TOKEN_PRESENT = 0x1
    REMOVABLE_DEVICE = 0x2
    HW_SLOT = 0x4
    # CK_SESSION_INFO / C_OpenSession
    RW_SESSION = 0x2
    SERIAL_SESSION = 0x4


class CKF_TOKEN(enum.IntFlag):  # the PKCS#11 family name (CKF_...), apart from CKF
    """CK_TOKEN_INFO flags."""

    RNG = 0x1
    WRITE_PROTECTED = 0x2
    LOGIN_REQUIRED = 0x4
    USER_PIN_INITIALIZED = 0x8
    PROTECTED_AUTHENTICATION_PATH = 0x100
    TOKEN_INITIALIZED = 0x400
    USER_PIN_COUNT_LOW = 0x10000
    USER_PIN_FINAL_TRY = 0x20000
    USER_PIN_LOCKED = 0x40000


class CKF_MECH(enum.IntFlag):  # the PKCS#11 family name (CKF_...), apart from CKF
    """CK_MECHANISM_INFO flags."""

    HW = 0x1
    ENCRYPT = 0x100
    DECRYPT = 0x200
    DIGEST = 0x400
    SIGN = 0x800
    VERIFY = 0x2000
    GENERATE = 0x8000
    GENERATE_KEY_PAIR = 0x10000
    EC_F_P = 0x100000
    EC_NAMEDCURVE = 0x800000
    EC_UNCOMPRESS = 0x1000000


#: The "no mechanism" marker: 0 before p11-kit 0.25.4, 0xffffffff since (accept both).
CK_UNAVAILABLE_INFORMATION = 0xFFFFFFFFFFFFFFFF


def name_of(family: type[enum.IntEnum], value: int) -> str:
    """``CKR_PIN_INCORRECT`` for a named value, ``CKR_0x1234`` for one the project does not name."""
    prefix = family.__name__.split("_")[0]
    try:
        return f"{prefix}_{family(value).name}"
    except ValueError:
        return f"{prefix}_0x{value:X}"
