"""PKCS#11 templates: check what an application asks for and fill in an object's attributes.

Theory of operation
-------------------
A template is checked before anything is made: every attribute type must be one this
token knows, its value of the right kind (`ped.pkcs11.token.attr_kind`) and bounded
(`MAX_VALUE`), a label valid UTF-8, no type given twice.  The attributes a token sets
itself (CKA_LOCAL, CKA_ALWAYS_SENSITIVE...) cannot be asked for.  Private and secret keys
are always sensitive and never extractable: a template asking otherwise is refused with a
message, rather than silently corrected, so that an application never believes it got a
key it can export.

The attributes of a stored object are a `dict` from type to value; `encode`/`decode` turn
it into the JSON kept (authenticated, see `hsm.token.vault`) in `hsm.store`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from ped.pkcs11.constants import CKA, CKK, CKM, CKO, CKR, name_of
from ped.pkcs11.token import Attribute, AttributeResult, AttrKind, AttrValue, Pkcs11Error, attr_kind

#: The longest attribute value accepted (a label, an id, EC parameters, a point).
MAX_VALUE = 1024
#: The most attributes one template may carry.
MAX_TEMPLATE = 64

Attrs = dict[int, AttrValue]

#: What an application may set in a template.
SETTABLE = frozenset({
    CKA.CLASS, CKA.TOKEN, CKA.PRIVATE, CKA.LABEL, CKA.ID, CKA.KEY_TYPE, CKA.SENSITIVE,
    CKA.ENCRYPT, CKA.DECRYPT, CKA.WRAP, CKA.UNWRAP, CKA.SIGN, CKA.SIGN_RECOVER, CKA.VERIFY,
    CKA.VERIFY_RECOVER, CKA.DERIVE, CKA.EXTRACTABLE, CKA.VALUE_LEN, CKA.EC_PARAMS,
    CKA.MODIFIABLE, CKA.COPYABLE, CKA.DESTROYABLE, CKA.ALWAYS_AUTHENTICATE,
})  # fmt: skip
#: What the token sets itself (an application may search by them, not set them).
TOKEN_SET = frozenset({
    CKA.LOCAL, CKA.NEVER_EXTRACTABLE, CKA.ALWAYS_SENSITIVE, CKA.KEY_GEN_MECHANISM,
    CKA.EC_POINT, CKA.VALUE,
})  # fmt: skip
KNOWN = SETTABLE | TOKEN_SET

#: Usage flags each kind of key may carry, and the ones on by default.
_USAGE = (CKA.ENCRYPT, CKA.DECRYPT, CKA.WRAP, CKA.UNWRAP, CKA.SIGN, CKA.SIGN_RECOVER,
          CKA.VERIFY, CKA.VERIFY_RECOVER, CKA.DERIVE)  # fmt: skip
_DEFAULT_ON: dict[tuple[int, int], frozenset[int]] = {
    (CKO.SECRET_KEY, CKK.AES): frozenset({CKA.ENCRYPT, CKA.DECRYPT}),
    (CKO.SECRET_KEY, CKK.GENERIC_SECRET): frozenset({CKA.SIGN, CKA.VERIFY}),
    (CKO.PRIVATE_KEY, CKK.EC): frozenset({CKA.SIGN}),
    (CKO.PUBLIC_KEY, CKK.EC): frozenset({CKA.VERIFY}),
    (CKO.PRIVATE_KEY, CKK.EC_EDWARDS): frozenset({CKA.SIGN}),
    (CKO.PUBLIC_KEY, CKK.EC_EDWARDS): frozenset({CKA.VERIFY}),
}


def _err(rv: int, message: str) -> Pkcs11Error:
    return Pkcs11Error(rv, message)


def attr_name(attr_type: int) -> str:
    return name_of(CKA, attr_type)


def check_template(template: Sequence[Attribute], *, searching: bool = False) -> Attrs:
    """The template as a dict, every value checked (see the module docstring)."""
    if len(template) > MAX_TEMPLATE:
        raise _err(CKR.ARGUMENTS_BAD, f"a template holds at most {MAX_TEMPLATE} attributes")
    out: Attrs = {}
    for attr in template:
        name = attr_name(attr.type)
        if attr.type in out:
            raise _err(CKR.TEMPLATE_INCONSISTENT, f"{name} is given twice in the template")
        if attr.type not in KNOWN:
            raise _err(
                CKR.ATTRIBUTE_TYPE_INVALID, f"{name} is not an attribute this token supports"
            )
        if not searching and attr.type in TOKEN_SET:
            raise _err(
                CKR.ATTRIBUTE_READ_ONLY, f"{name} is set by the token; leave it out of the template"
            )
        out[attr.type] = _checked_value(attr.type, attr.value)
    return out


def _checked_value(attr_type: int, value: object) -> AttrValue:
    name = attr_name(attr_type)
    kind = attr_kind(attr_type)
    if kind is AttrKind.BOOL:
        if not isinstance(value, bool):
            raise _err(CKR.ATTRIBUTE_VALUE_INVALID, f"{name} is a CK_BBOOL (true or false)")
        return value
    if kind is AttrKind.ULONG:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
            raise _err(CKR.ATTRIBUTE_VALUE_INVALID, f"{name} is a CK_ULONG")
        return value
    if not isinstance(value, bytes):
        raise _err(CKR.ATTRIBUTE_VALUE_INVALID, f"{name} is a byte array")
    if len(value) > MAX_VALUE:
        raise _err(
            CKR.ATTRIBUTE_VALUE_INVALID,
            f"{name} has {len(value)} bytes; this token keeps at most {MAX_VALUE}",
        )
    if attr_type == CKA.LABEL:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise _err(CKR.ATTRIBUTE_VALUE_INVALID, "CKA_LABEL must be UTF-8 text") from None
    return value


def new_object(
    given: Attrs, cls: int, key_type: int, mechanism: int, *, extra: Mapping[int, AttrValue]
) -> Attrs:
    """The full attributes of a key the token generates (*extra*: its type-specific ones)."""
    if given.get(CKA.CLASS, cls) != cls:
        raise _err(
            CKR.TEMPLATE_INCONSISTENT,
            f"the template asks for {name_of(CKO, int(given[CKA.CLASS]))} but "
            f"{name_of(CKM, mechanism)} makes a {name_of(CKO, cls)}",
        )
    if given.get(CKA.KEY_TYPE, key_type) != key_type:
        raise _err(
            CKR.TEMPLATE_INCONSISTENT,
            f"the template asks for key type {name_of(CKK, int(given[CKA.KEY_TYPE]))} but "
            f"{name_of(CKM, mechanism)} makes {name_of(CKK, key_type)}",
        )
    secret = cls in (CKO.PRIVATE_KEY, CKO.SECRET_KEY)
    if secret:
        if given.get(CKA.EXTRACTABLE) is True:
            raise _err(
                CKR.TEMPLATE_INCONSISTENT,
                "private and secret keys of this HSM are never extractable; "
                "leave CKA_EXTRACTABLE out or set it false",
            )
        if given.get(CKA.SENSITIVE) is False:
            raise _err(
                CKR.TEMPLATE_INCONSISTENT,
                "private and secret keys of this HSM are always sensitive; "
                "leave CKA_SENSITIVE out or set it true",
            )
    on = _DEFAULT_ON.get((cls, key_type), frozenset())
    attrs: Attrs = {
        CKA.CLASS: cls,
        CKA.KEY_TYPE: key_type,
        CKA.TOKEN: False,
        CKA.PRIVATE: secret,
        CKA.LABEL: b"",
        CKA.ID: b"",
        CKA.MODIFIABLE: False,
        CKA.COPYABLE: False,
        CKA.DESTROYABLE: True,
        CKA.LOCAL: True,
        CKA.KEY_GEN_MECHANISM: mechanism,
        **{usage: usage in on for usage in _USAGE},
    }
    if secret:
        attrs.update({
            CKA.SENSITIVE: True, CKA.EXTRACTABLE: False, CKA.ALWAYS_SENSITIVE: True,
            CKA.NEVER_EXTRACTABLE: True, CKA.ALWAYS_AUTHENTICATE: False,
        })  # fmt: skip
    for attr_type, value in given.items():
        if attr_type in (CKA.EC_PARAMS, CKA.VALUE_LEN) and attr_type not in extra:
            raise _err(
                CKR.TEMPLATE_INCONSISTENT,
                f"{attr_name(attr_type)} does not belong to a {name_of(CKO, cls)} of type "
                f"{name_of(CKK, key_type)}",
            )
        attrs[attr_type] = value
    attrs.update(extra)
    return attrs


def matches(attrs: Mapping[int, AttrValue], template: Mapping[int, AttrValue]) -> bool:
    """Does an object carry every attribute of a search template, with the same value?"""
    return all(t in attrs and attrs[t] == v for t, v in template.items())


def read(attrs: Mapping[int, AttrValue], types: Sequence[int]) -> list[AttributeResult]:
    """C_GetAttributeValue: each value, or why there is none (a secret's CKA_VALUE)."""
    out = []
    for attr_type in types:
        if attr_type == CKA.VALUE and attrs.get(CKA.CLASS) in (CKO.PRIVATE_KEY, CKO.SECRET_KEY):
            out.append(AttributeResult(attr_type, None, CKR.ATTRIBUTE_SENSITIVE))
        elif attr_type in attrs:
            out.append(AttributeResult(attr_type, attrs[attr_type]))
        else:
            out.append(AttributeResult(attr_type, None, CKR.ATTRIBUTE_TYPE_INVALID))
    return out


def encode(attrs: Mapping[int, AttrValue]) -> str:
    """The attributes as canonical JSON (sorted: the same attributes, the same text)."""
    items = []
    for attr_type in sorted(attrs):
        value = attrs[attr_type]
        items.append([attr_type, value.hex() if isinstance(value, bytes) else value])
    return json.dumps(items, separators=(",", ":"))


def decode(text: str) -> Attrs:
    out: Attrs = {}
    for attr_type, value in json.loads(text):
        kind = attr_kind(attr_type)
        if kind is AttrKind.BYTES:
            out[attr_type] = bytes.fromhex(value)
        elif kind is AttrKind.BOOL:
            out[attr_type] = bool(value)
        else:
            out[attr_type] = int(value)
    return out


def label_of(attrs: Mapping[int, AttrValue]) -> str:
    """The object's label for messages and log lines (labels are not secret)."""
    value = attrs.get(CKA.LABEL, b"")
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""
