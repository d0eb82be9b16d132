"""The one encoding of the client path's typed values (attributes, mechanisms, infos).

Every typed value of ``ped.pkcs11.token`` that crosses the 1792 hop is written and read
here and nowhere else, so that a value has exactly one encoding (docs/protocol/client.md,
"Values").  An attribute's value is typed by its attribute type (`attr_kind`): a BOOL is
one byte (0 or 1), a ULONG eight bytes, everything else a length-prefixed byte string.
The kind is never sent: both ends derive it from the type, so a peer cannot make a label
an integer.  Sizes are bounded (`MAX_ATTR_VALUE`, `MAX_TEMPLATE`...), and a field out of
bounds is a `FieldOutOfRange` naming the field, never its content.
"""

from __future__ import annotations

from collections.abc import Sequence

from ped.errors import FieldOutOfRange, LocalProtocolError
from ped.ntls.messages import NTLS_VERSION_AUTO_ACTIVATION
from ped.pkcs11.constants import CKR
from ped.pkcs11.token import (
    Attribute,
    AttributeResult,
    AttrKind,
    AttrValue,
    GcmParams,
    Mechanism,
    MechanismInfo,
    PartitionInfo,
    TokenInfo,
    attr_kind,
)
from ped.wire.codec import Reader, Writer

MAX_ATTR_VALUE = 8 * 1024  # one attribute's bytes (a public key, a label, an id)
MAX_TEMPLATE = 64  # attributes in one template or one C_GetAttributeValue
MAX_DATA = 32 * 1024  # data to sign, verify, encrypt or decrypt in one request
MAX_OUTPUT = MAX_DATA + 256  # a result: ciphertext (tag included) or a signature
MAX_MECH_PARAM = 1024  # a raw mechanism parameter
MAX_IV = 256  # a GCM IV
MAX_HANDLES = 4096  # handles one C_FindObjects returns
MAX_PARTITIONS = 256
MAX_MECHANISMS = 128
MAX_RANDOM = 4096  # bytes of one C_GenerateRandom
MAX_PIN = 256  # a challenge secret (ped.pkcs11.token.TokenInfo.max_pin_len)
MAX_SERIAL = 16  # CK_TOKEN_INFO's serialNumber
MAX_LABEL = 32  # CK_TOKEN_INFO's label
MAX_INFO_TEXT = 64  # model, manufacturer
MAX_ULONG = 0xFFFFFFFFFFFFFFFF
MAX_TYPE = 0xFFFFFFFF  # attribute, mechanism and user types, return values

_PARAM_NONE, _PARAM_BYTES, _PARAM_GCM = 0, 1, 2


# ---- attributes ---------------------------------------------------------------------


def write_value(w: Writer, attr_type: int, value: AttrValue) -> None:
    kind = attr_kind(attr_type)
    if kind is AttrKind.BOOL:
        if not isinstance(value, bool):
            raise LocalProtocolError(f"attribute 0x{attr_type:x} takes a bool")
        w.u8(int(value))
    elif kind is AttrKind.ULONG:
        if isinstance(value, bool) or not isinstance(value, int):
            raise LocalProtocolError(f"attribute 0x{attr_type:x} takes an integer")
        w.u64(value)
    else:
        if not isinstance(value, bytes | bytearray):
            raise LocalProtocolError(f"attribute 0x{attr_type:x} takes bytes")
        if len(value) > MAX_ATTR_VALUE:
            raise LocalProtocolError(
                f"attribute 0x{attr_type:x} is {len(value)} bytes, over {MAX_ATTR_VALUE}"
            )
        w.bytes16(bytes(value))


def read_value(r: Reader, attr_type: int) -> AttrValue:
    kind = attr_kind(attr_type)
    if kind is AttrKind.BOOL:
        return bool(r.u8("bool value", high=1))
    if kind is AttrKind.ULONG:
        return r.u64("ulong value")
    return r.bytes16("attribute value", max_len=MAX_ATTR_VALUE)


def write_template(w: Writer, template: Sequence[Attribute]) -> None:
    if len(template) > MAX_TEMPLATE:
        raise LocalProtocolError(f"{len(template)} attributes, over {MAX_TEMPLATE}")
    w.u16(len(template))
    for attr in template:
        w.u32(attr.type)
        write_value(w, attr.type, attr.value)


def read_template(r: Reader) -> tuple[Attribute, ...]:
    count = r.u16("attribute count", high=MAX_TEMPLATE)
    out = []
    for _ in range(count):
        attr_type = r.u32("attribute type")
        out.append(Attribute(attr_type, read_value(r, attr_type)))
    return tuple(out)


def write_types(w: Writer, types: Sequence[int]) -> None:
    if len(types) > MAX_TEMPLATE:
        raise LocalProtocolError(f"{len(types)} attribute types, over {MAX_TEMPLATE}")
    w.u16(len(types))
    for t in types:
        w.u32(t)


def read_types(r: Reader) -> tuple[int, ...]:
    count = r.u16("type count", high=MAX_TEMPLATE)
    return tuple(r.u32("attribute type") for _ in range(count))


def write_results(w: Writer, results: Sequence[AttributeResult]) -> None:
    if len(results) > MAX_TEMPLATE:
        raise LocalProtocolError(f"{len(results)} attribute results, over {MAX_TEMPLATE}")
    w.u16(len(results))
    for res in results:
        w.u32(res.type)
        w.u32(res.rv)
        if res.rv == CKR.OK:
            if res.value is None:
                raise LocalProtocolError(f"attribute 0x{res.type:x}: CKR_OK needs a value")
            write_value(w, res.type, res.value)


def read_results(r: Reader) -> tuple[AttributeResult, ...]:
    count = r.u16("result count", high=MAX_TEMPLATE)
    out = []
    for _ in range(count):
        attr_type = r.u32("attribute type")
        rv = r.u32("attribute rv")
        value = read_value(r, attr_type) if rv == CKR.OK else None
        out.append(AttributeResult(attr_type, value, rv))
    return tuple(out)


# ---- mechanisms -----------------------------------------------------------------------


def write_mechanism(w: Writer, mech: Mechanism) -> None:
    w.u32(mech.mechanism)
    param = mech.parameter
    if param is None:
        w.u8(_PARAM_NONE)
    elif isinstance(param, GcmParams):
        if len(param.iv) > MAX_IV or len(param.aad) > MAX_DATA:
            raise LocalProtocolError("GCM parameters over their limits")
        w.u8(_PARAM_GCM).bytes16(param.iv).bytes16(param.aad).u16(param.tag_bits)
    else:
        if len(param) > MAX_MECH_PARAM:
            raise LocalProtocolError(f"mechanism parameter over {MAX_MECH_PARAM} bytes")
        w.u8(_PARAM_BYTES).bytes16(bytes(param))


def read_mechanism(r: Reader) -> Mechanism:
    mechanism = r.u32("mechanism")
    tag = r.u8("parameter kind", high=_PARAM_GCM)
    if tag == _PARAM_NONE:
        return Mechanism(mechanism)
    if tag == _PARAM_BYTES:
        return Mechanism(mechanism, r.bytes16("mechanism parameter", max_len=MAX_MECH_PARAM))
    iv = r.bytes16("GCM IV", max_len=MAX_IV)
    aad = r.bytes16("GCM AAD", max_len=MAX_DATA)
    tag_bits = r.u16("GCM tag bits", high=128)
    return Mechanism(mechanism, GcmParams(iv, aad, tag_bits))


def write_mechanism_infos(w: Writer, infos: Sequence[MechanismInfo]) -> None:
    if len(infos) > MAX_MECHANISMS:
        raise LocalProtocolError(f"{len(infos)} mechanisms, over {MAX_MECHANISMS}")
    w.u16(len(infos))
    for info in infos:
        w.u32(info.mechanism).u32(info.min_key_size).u32(info.max_key_size).u64(info.flags)


def read_mechanism_infos(r: Reader) -> tuple[MechanismInfo, ...]:
    count = r.u16("mechanism count", high=MAX_MECHANISMS)
    return tuple(
        MechanismInfo(r.u32("mechanism"), r.u32("min key size"), r.u32("max key size"),
                      r.u64("mechanism flags"))
        for _ in range(count)
    )  # fmt: skip


# ---- partitions and tokens ------------------------------------------------------------


def write_text(w: Writer, text: str, limit: int, field: str) -> None:
    data = text.encode("utf-8")
    if len(data) > limit:
        raise LocalProtocolError(f"{field} is {len(data)} bytes, over {limit}")
    w.bytes16(data)


def read_text(r: Reader, field: str, limit: int) -> str:
    text = r.text16(field, max_len=limit)
    if not text.isprintable():
        raise FieldOutOfRange(f"field {field!r} holds unprintable characters")
    return text


def write_serial(w: Writer, serial: str) -> None:
    write_text(w, serial, MAX_SERIAL, "serial")


def read_serial(r: Reader) -> str:
    return read_text(r, "serial", MAX_SERIAL)


def partition_flags_max(version: int) -> int:
    """The highest partition-info flags byte *version* of the client protocol allows."""
    return 7 if version >= NTLS_VERSION_AUTO_ACTIVATION else 3


def write_partitions(w: Writer, parts: Sequence[PartitionInfo], version: int) -> None:
    """Partition infos as *version* (the connection's) has them: bit 2 from version 2 on."""
    if len(parts) > MAX_PARTITIONS:
        raise LocalProtocolError(f"{len(parts)} partitions, over {MAX_PARTITIONS}")
    w.u16(len(parts))
    for p in parts:
        write_serial(w, p.serial)
        write_text(w, p.label, MAX_LABEL, "label")
        flags = int(p.initialised) | int(p.activated) << 1 | int(p.auto_activation) << 2
        w.u8(flags & partition_flags_max(version))  # a version-1 peer never sees bit 2


def read_partitions(r: Reader, version: int) -> tuple[PartitionInfo, ...]:
    count = r.u16("partition count", high=MAX_PARTITIONS)
    out = []
    for _ in range(count):
        serial = read_serial(r)
        label = read_text(r, "label", MAX_LABEL)
        flags = r.u8("partition flags", high=partition_flags_max(version))
        out.append(PartitionInfo(serial, label, bool(flags & 1), bool(flags & 2),
                                 auto_activation=bool(flags & 4)))  # fmt: skip
    return tuple(out)


def write_token_info(w: Writer, info: TokenInfo) -> None:
    write_text(w, info.label, MAX_LABEL, "label")
    write_serial(w, info.serial)
    write_text(w, info.model, MAX_INFO_TEXT, "model")
    write_text(w, info.manufacturer, MAX_INFO_TEXT, "manufacturer")
    w.u64(info.flags).u32(info.max_pin_len).u32(info.min_pin_len)


def read_token_info(r: Reader) -> TokenInfo:
    label = read_text(r, "label", MAX_LABEL)
    serial = read_serial(r)
    model = read_text(r, "model", MAX_INFO_TEXT)
    manufacturer = read_text(r, "manufacturer", MAX_INFO_TEXT)
    flags = r.u64("token flags")
    max_pin, min_pin = r.u32("max pin length"), r.u32("min pin length")
    return TokenInfo(label, serial, model, manufacturer, flags, max_pin, min_pin)
