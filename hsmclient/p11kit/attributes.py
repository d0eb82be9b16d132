"""Templates, attribute answers and mechanisms as p11-kit's RPC carries them (sans-IO).

p11-kit chooses each attribute's encoding from its type (``WireKind``), not from what the
application passed: a boolean travels as one byte, a CK_ULONG as 8 bytes, anything else
as a byte array.  The length before the value is the *native* ``ulValueLen`` (1 for a
CK_BBOOL, 8 for a CK_ULONG on the 64-bit hosts p11-kit-client runs on, the byte count
otherwise): the client copies a value only into a buffer at least that long, so a server
that wrote the encoded size instead would make clients misreport lengths (p11-kit issue
679).  The Python value follows `ped.pkcs11.token.attr_kind`; the two tables differ (p11-kit
sends CKA_DESTROYABLE as a byte array, for one) and both are honoured here.

A mechanism is its type and a parameter whose encoding depends on the negotiated protocol
version: versions 0 and 1 send a byte array (a NULL one for parameterless mechanisms;
version 1 sends CK_GCM_PARAMS field by field); version 2 sends nothing for the mechanisms
p11-kit knows to take no parameter, else a presence byte and the parameter.  The "no
mechanism" marker of a C_*Init (cancel the operation) is 0xffffffff, or 0 from p11-kit
0.25.0-0.25.2 (version 1): both are accepted.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from hsmclient.p11kit.buffer import Reader, Writer
from hsmclient.p11kit.errors import MalformedMessage
from ped.pkcs11.constants import CKM, CKR
from ped.pkcs11.token import (
    Attribute,
    AttributeResult,
    AttrKind,
    AttrValue,
    GcmParams,
    Mechanism,
    Pkcs11Error,
    attr_kind,
)

#: The most attributes one template may carry (a bound, not a PKCS#11 rule).
MAX_TEMPLATE = 512
_CK_ULONG_SIZE = 8  # the native CK_ULONG of the 64-bit clients
_UNAVAILABLE = 0xFFFFFFFF  # p11-kit's marker, as a 32-bit field
_ARRAY_ATTRIBUTE = 0x40000000  # CKF_ARRAY_ATTRIBUTE


class WireKind(enum.Enum):
    """How p11-kit encodes a value of an attribute type."""

    BYTE = "byte"
    ULONG = "ulong"
    BYTES = "bytes"
    DATE = "date"
    NESTED = "nested"  # attribute or mechanism arrays: never accepted in a request


# p11-kit's own tables (rpc-message.c, map_attribute_to_value_type), as numbers.
_WIRE_BYTE = frozenset({
    0x001, 0x002, 0x086, 0x103, 0x104, 0x105, 0x106, 0x107, 0x108, 0x109, 0x10A, 0x10B,
    0x10C, 0x162, 0x163, 0x164, 0x165, 0x170, 0x171, 0x200, 0x202, 0x210, 0x301, 0x302,
    0x405,
})  # fmt: skip
_WIRE_ULONG = frozenset({
    0x000, 0x080, 0x087, 0x088, 0x100, 0x121, 0x133, 0x134, 0x160, 0x161, 0x166, 0x201,
    0x300, 0x400, 0x401, 0x402, 0x403, 0x404, 0x406, 0x500,
})  # fmt: skip
_WIRE_DATE = frozenset({0x110, 0x111})


def wire_kind(attr_type: int) -> WireKind:
    """How p11-kit encodes attribute `attr_type` (unknown types are byte arrays)."""
    if attr_type in _WIRE_BYTE:
        return WireKind.BYTE
    if attr_type in _WIRE_ULONG:
        return WireKind.ULONG
    if attr_type in _WIRE_DATE:
        return WireKind.DATE
    if attr_type & _ARRAY_ATTRIBUTE:
        return WireKind.NESTED
    return WireKind.BYTES


def _to_python(attr_type: int, raw: int | bytes) -> AttrValue:
    """A wire value as the contract types it (`attr_kind`)."""
    kind = attr_kind(attr_type)
    if isinstance(raw, int):
        if kind is AttrKind.BOOL:
            return raw != 0
        if kind is AttrKind.ULONG:
            return raw
        return raw.to_bytes(_CK_ULONG_SIZE, "little")  # the application's native memory
    if kind is AttrKind.BOOL:
        return any(raw)
    if kind is AttrKind.ULONG:
        return int.from_bytes(raw, "little")
    return raw


def _wire_bytes(value: AttrValue) -> bytes:
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, int):
        return value.to_bytes(_CK_ULONG_SIZE, "little")
    return value


def native_length(attr_type: int, value: AttrValue) -> int:
    """The ulValueLen an application sees for this value."""
    kind = wire_kind(attr_type)
    if kind is WireKind.BYTE:
        return 1
    if kind is WireKind.ULONG:
        return _CK_ULONG_SIZE
    return len(_wire_bytes(value))


def read_template(reader: Reader, what: str = "template") -> list[Attribute]:
    """An "aA" field: a template an application wrote."""
    count = reader.u32(what)
    if count > MAX_TEMPLATE:
        raise MalformedMessage(f"{what}: {count} attributes, the limit is {MAX_TEMPLATE}")
    reader.check_count(count, 5, what)
    template = []
    for _ in range(count):
        attr_type = reader.u32(what)
        if not reader.byte(what):
            raise Pkcs11Error(
                CKR.ATTRIBUTE_VALUE_INVALID,
                f"attribute 0x{attr_type:X} in the {what} has no value; give it one",
            )
        reader.u32(what)  # the native length: the value's own encoding says how much follows
        kind = wire_kind(attr_type)
        raw: int | bytes
        if kind is WireKind.BYTE:
            raw = reader.byte(what)
        elif kind is WireKind.ULONG:
            raw = reader.u64(what)
        elif kind is WireKind.NESTED:
            raise Pkcs11Error(
                CKR.ATTRIBUTE_TYPE_INVALID,
                f"attribute 0x{attr_type:X} (a nested template) is not supported here",
            )
        else:
            raw = reader.array(what) or b""
        template.append(Attribute(attr_type, _to_python(attr_type, raw)))
    return template


def read_attribute_buffer(reader: Reader) -> list[tuple[int, int | None]]:
    """An "fA" field: the attribute types asked for and the room for each (None: size query)."""
    count = reader.u32("attribute buffer")
    if count > MAX_TEMPLATE:
        raise MalformedMessage(f"attribute buffer: {count} attributes, limit {MAX_TEMPLATE}")
    reader.check_count(count, 8, "attribute buffer")
    asked = []
    for _ in range(count):
        attr_type = reader.u32("attribute buffer")
        room = reader.u32("attribute buffer")
        asked.append((attr_type, room if room else None))
    return asked


def write_attribute_answers(
    writer: Writer, asked: Sequence[tuple[int, int | None]], results: Sequence[AttributeResult]
) -> int:
    """C_GetAttributeValue's "aAu" answer; returns the call's return value.

    Each attribute is answered by PKCS#11's rules: a size query gets the length, a value
    that fits is copied, one that does not is unavailable with CKR_BUFFER_TOO_SMALL; a
    sensitive or missing attribute is unavailable with its own return value.
    """
    by_type = {result.type: result for result in results}
    seen: set[int] = set()
    writer.u32(len(asked))
    for attr_type, room in asked:
        writer.u32(attr_type)
        result = by_type.get(attr_type)
        if result is None or result.rv != CKR.OK or result.value is None:
            writer.byte(0)  # unavailable (ulValueLen -1)
            seen.add(result.rv if result is not None and result.rv != CKR.OK
                     else CKR.ATTRIBUTE_TYPE_INVALID)  # fmt: skip
            continue
        length = native_length(attr_type, result.value)
        if room is not None and room < length:
            writer.byte(0)
            seen.add(CKR.BUFFER_TOO_SMALL)
            continue
        writer.byte(1)
        writer.u32(length)
        kind = wire_kind(attr_type)
        if kind is WireKind.BYTE:
            writer.byte(_wire_bytes(result.value)[0] if room is not None else 0)
        elif kind is WireKind.ULONG:
            value = result.value
            number = int.from_bytes(value, "little") if isinstance(value, bytes) else int(value)
            writer.u64(number if room is not None else 0)
        else:
            writer.array(_wire_bytes(result.value) if room is not None else None)
    for rv in (CKR.ATTRIBUTE_SENSITIVE, CKR.ATTRIBUTE_TYPE_INVALID, CKR.BUFFER_TOO_SMALL):
        if rv in seen:
            writer.u64(rv)
            return rv
    writer.u64(CKR.OK)
    return CKR.OK


# Mechanisms p11-kit sends without a parameter in version 2 (those the project names).
_NO_PARAMETER_V2 = frozenset({
    CKM.SHA256, CKM.SHA256_HMAC, CKM.GENERIC_SECRET_KEY_GEN, CKM.EC_KEY_PAIR_GEN, CKM.ECDSA,
    CKM.ECDSA_SHA256, CKM.AES_KEY_GEN,
})  # fmt: skip
_KNOWN = frozenset(int(m) for m in CKM)


def read_mechanism(reader: Reader, version: int, *, cancels: bool) -> Mechanism | None:
    """An "M" field; None is the "no mechanism" marker (only where `cancels`: a C_*Init).

    A mechanism the project does not name is refused with CKR_MECHANISM_INVALID before its
    parameter is read: p11-kit encodes parameters per mechanism, so an unknown one cannot
    be skipped (the whole call is answered with that error; the framing stays aligned).
    """
    mechanism = reader.u32("mechanism")
    if cancels and (mechanism == _UNAVAILABLE or (mechanism == 0 and version >= 1)):
        return None
    if mechanism not in _KNOWN:
        raise Pkcs11Error(
            CKR.MECHANISM_INVALID,
            f"mechanism 0x{mechanism:X} is not offered by this token; see C_GetMechanismList",
        )
    if version >= 2:
        if mechanism in _NO_PARAMETER_V2 or not reader.byte("mechanism parameter flag"):
            return Mechanism(mechanism)
        return Mechanism(mechanism, _read_parameter(reader, mechanism, structured=True))
    return Mechanism(mechanism, _read_parameter(reader, mechanism, structured=version >= 1))


def _read_parameter(
    reader: Reader, mechanism: int, *, structured: bool
) -> bytes | GcmParams | None:
    if structured and mechanism == CKM.AES_GCM:
        iv = reader.array("GCM IV") or b""
        reader.u64("GCM IV bits")
        aad = reader.array("GCM AAD") or b""
        tag_bits = reader.u64("GCM tag bits")
        return GcmParams(iv=iv, aad=aad, tag_bits=tag_bits)
    return reader.array("mechanism parameter")


def write_mechanism(writer: Writer, mechanism: Mechanism | None, version: int) -> None:
    """The client's encoding of an "M" field (for tests and the fuzz seeds)."""
    if mechanism is None:
        writer.u32(_UNAVAILABLE)
        return
    writer.u32(mechanism.mechanism)
    param = mechanism.parameter
    if version >= 2:
        if mechanism.mechanism in _NO_PARAMETER_V2:
            return
        if param is None:
            writer.byte(0)
            return
        writer.byte(1)
    if isinstance(param, GcmParams):
        if version == 0:
            raise ValueError("p11-kit 0.24 (version 0) cannot carry CK_GCM_PARAMS")
        writer.array(param.iv)
        writer.u64(len(param.iv) * 8)
        writer.array(param.aad)
        writer.u64(param.tag_bits)
    else:
        writer.array(param)


def write_template(writer: Writer, template: Sequence[Attribute]) -> None:
    """The client's encoding of an "aA" field (for tests and the fuzz seeds)."""
    writer.u32(len(template))
    for attr in template:
        writer.u32(attr.type)
        writer.byte(1)
        writer.u32(native_length(attr.type, attr.value))
        kind = wire_kind(attr.type)
        if kind is WireKind.BYTE:
            writer.byte(_wire_bytes(attr.value)[0])
        elif kind is WireKind.ULONG:
            value = attr.value
            writer.u64(int.from_bytes(value, "little") if isinstance(value, bytes) else int(value))
        else:
            writer.array(_wire_bytes(attr.value))


