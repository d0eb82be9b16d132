"""Templates under hypothesis: any template is accepted with a full, consistent object or
refused with a PKCS#11 template error; never a key that can be read or exported."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hsm.token import keygen
from hsm.token import template as tpl
from ped.pkcs11.constants import CKA, CKM, CKO, CKR
from ped.pkcs11.token import Attribute, AttrKind, Pkcs11Error, attr_kind

TEMPLATE_ERRORS = {
    CKR.ARGUMENTS_BAD, CKR.ATTRIBUTE_READ_ONLY, CKR.ATTRIBUTE_TYPE_INVALID,
    CKR.ATTRIBUTE_VALUE_INVALID, CKR.TEMPLATE_INCONSISTENT, CKR.TEMPLATE_INCOMPLETE,
    CKR.KEY_SIZE_RANGE, CKR.CURVE_NOT_SUPPORTED,
}  # fmt: skip

_TYPES = st.sampled_from([*map(int, CKA), 0x8000_0001, 0x999])


@st.composite
def attributes(draw: st.DrawFn) -> Attribute:
    attr_type = draw(_TYPES)
    kind = attr_kind(attr_type)
    well_typed = draw(st.booleans())
    if kind is AttrKind.BOOL and well_typed:
        return Attribute(attr_type, draw(st.booleans()))
    if kind is AttrKind.ULONG and well_typed:
        return Attribute(attr_type, draw(st.integers(0, 2**64 - 1)))
    if attr_type == CKA.EC_PARAMS and well_typed:
        return Attribute(attr_type, draw(st.sampled_from([keygen.P256_OID, keygen.ED25519_OID])))
    value = draw(st.one_of(st.binary(max_size=1100), st.integers(-5, 5), st.booleans()))
    return Attribute(attr_type, value)


templates = st.lists(attributes(), max_size=12)


@settings(max_examples=300, deadline=None)
@given(templates)
def test_secret_key_templates(template: list[Attribute]) -> None:
    try:
        new = keygen.generate_secret(CKM.AES_KEY_GEN, tpl.check_template(template))
    except Pkcs11Error as exc:
        assert exc.rv in TEMPLATE_ERRORS, exc
        return
    a = new.attributes
    assert a[CKA.CLASS] == CKO.SECRET_KEY and a[CKA.SENSITIVE] is True
    assert a[CKA.EXTRACTABLE] is False and a[CKA.NEVER_EXTRACTABLE] is True
    assert len(new.value) == a[CKA.VALUE_LEN]
    assert tpl.decode(tpl.encode(a)) == a
    (value,) = tpl.read(a, [CKA.VALUE])
    assert value.rv == CKR.ATTRIBUTE_SENSITIVE and value.value is None


@settings(max_examples=200, deadline=None)
@given(templates, templates)
def test_key_pair_templates(public: list[Attribute], private: list[Attribute]) -> None:
    try:
        pub, priv = keygen.generate_pair(
            CKM.EC_KEY_PAIR_GEN, tpl.check_template(public), tpl.check_template(private)
        )
    except Pkcs11Error as exc:
        assert exc.rv in TEMPLATE_ERRORS, exc
        return
    assert pub[CKA.CLASS] == CKO.PUBLIC_KEY and priv.attributes[CKA.CLASS] == CKO.PRIVATE_KEY
    assert priv.attributes[CKA.SENSITIVE] is True and priv.attributes[CKA.EXTRACTABLE] is False
    assert tpl.decode(tpl.encode(pub)) == pub


@settings(max_examples=200, deadline=None)
@given(templates)
def test_search_templates_never_raise_anything_else(template: list[Attribute]) -> None:
    try:
        wanted = tpl.check_template(template, searching=True)
    except Pkcs11Error as exc:
        assert exc.rv in TEMPLATE_ERRORS, exc
        return
    assert tpl.matches(wanted, wanted)
