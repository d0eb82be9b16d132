"""ped.pake: CPace against the draft's vectors, the password's rules, both ends of a run."""

from __future__ import annotations

import pytest

from ped.channel.errors import HandshakeRefused, RpvMismatch
from ped.channel.handshake import ChannelInitiator, ChannelResponder, PedInfo, RefuseReason
from ped.errors import RemoteProtocolError
from ped.pake import (
    InvalidShare,
    OneTimePassword,
    PakeInit,
    PakeInitiator,
    PakeResponder,
    PasswordVoid,
    cpace,
)
from ped.wire.framing import Frame
from ped.wire.types import E2EType

H = bytes.fromhex

# draft-irtf-cfrg-cpace, appendix "Test vector for CPace using group X25519 and hash SHA-512"
DRAFT_CI = H("0b415f696e69746961746f720b425f726573706f6e646572")
DRAFT_SID = H("7e4b4791d6a8ef019b936c79fb7f2c57")
DRAFT_YA_SCALAR = H("21b4f4bd9e64ed355c3eb676a28ebedaf6d8f17bdc365995b319097153044080")
DRAFT_YB_SCALAR = H("848b0779ff415f0af4ea14df9dd1d3c29ac41d836c7808896c4eba19c51ac40a")


def test_draft_string_utilities() -> None:
    assert cpace.prepend_len(b"") == H("00")
    assert cpace.prepend_len(b"1234") == H("0431323334")
    assert cpace.prepend_len(bytes(range(127)))[:1] == H("7f")
    assert cpace.prepend_len(bytes(range(128)))[:2] == H("8001")
    assert cpace.lv_cat(b"1234", b"5", b"", b"678") == H("043132333401350003363738")


def test_draft_generator() -> None:
    gen_str = cpace.generator_string(b"Password", DRAFT_CI, DRAFT_SID)
    assert len(gen_str) == 170
    assert gen_str.startswith(H("0843506163653235350850617373776f72646d00"))
    assert gen_str.endswith(
        H("180b415f696e69746961746f720b425f726573706f6e646572107e4b4791d6a8ef019b936c79fb7f2c57")
    )
    assert cpace.calculate_generator(b"Password", DRAFT_CI, DRAFT_SID) == H(
        "d04bf6d41f6a289632a2e929fa29bebd51092512a7829fdde7d314b62f05a73f"
    )


def test_draft_shares_key_and_isk() -> None:
    g = cpace.calculate_generator(b"Password", DRAFT_CI, DRAFT_SID)
    ya = cpace.scalar_mult(DRAFT_YA_SCALAR, g)
    yb = cpace.scalar_mult(DRAFT_YB_SCALAR, g)
    assert ya == H("1d13c89278cdadd826f6d8d7f887701430f8380ddc17611cdd6dc989ce0c9f32")
    assert yb == H("248cccf6d5cdc3646f0ad593f9e6cef4e69d4945f8372e623512ecea32185623")
    k = cpace.scalar_mult(DRAFT_YA_SCALAR, yb)
    assert k == cpace.scalar_mult(DRAFT_YB_SCALAR, ya) == H(
        "5b067effbdc0b2a0e1d907b21ebb25cfedb96a852179a847c37e43ee71322c6b"
    )
    transcript = cpace.transcript_ir(ya, b"ADa", yb, b"ADb")
    assert transcript == H(
        "201d13c89278cdadd826f6d8d7f887701430f8380ddc17611cdd6dc989ce0c9f320341446120"
        "248cccf6d5cdc3646f0ad593f9e6cef4e69d4945f8372e623512ecea3218562303414462"
    )
    assert bytes(cpace.intermediate_key(DRAFT_SID, k, transcript)) == H(
        "6e19b875f7a561d6b3ca3dbb9ef42ac55de3e717881018204b8922b4d5e53bb2"
        "aa82c300bea7b65d2b671da71922ddf6472301b79bc270adfa8bf413285f2263"
    )


LOW_ORDER_SCALAR = H("af46e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449aff")
# (u, expected scalar_mult_vfy result or None for the neutral element: abort)
LOW_ORDER = [
    ("0000000000000000000000000000000000000000000000000000000000000000", None),
    ("0100000000000000000000000000000000000000000000000000000000000000", None),
    ("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", None),
    ("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", None),
    ("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157", None),
    ("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", None),
    ("daffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
     "d8e2c776bbacd510d09fd9278b7edcd25fc5ae9adfba3b6e040e8d3b71b21806"),
    ("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", None),
    ("dbffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
     "c85c655ebe8be44ba9c0ffde69f2fe10194458d137f09bbff725ce58803cdb38"),
    ("d9ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
     "db64dafa9b8fdd136914e61461935fe92aa372cb056314e1231bc4ec12417456"),
    ("cdeb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
     "e062dcd5376d58297be2618c7498f55baa07d7e03184e8aada20bca28888bf7a"),
    ("4c9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
     "993c6ad11c4c29da9a56f7691fd0ff8d732e49de6250b6c2e80003ff4629a175"),
]


@pytest.mark.parametrize(("u", "expected"), LOW_ORDER)
def test_draft_low_order_points(u: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(cpace.InvalidPoint):
            cpace.scalar_mult(LOW_ORDER_SCALAR, H(u))
    else:
        assert cpace.scalar_mult(LOW_ORDER_SCALAR, H(u)).hex() == expected


# ------------------------------------------------------------------ the password


def test_password_is_digits_grouped_for_display_and_never_in_repr() -> None:
    pw = OneTimePassword.issue(0.0)
    shown = pw.display()
    assert len(shown.replace(" ", "")) == 8 and shown.replace(" ", "").isdigit()
    assert shown.replace(" ", "") not in repr(pw)


def test_password_expires() -> None:
    pw = OneTimePassword("12345678", issued_at=100.0, lifetime=600.0)
    pw.check(699.0)
    with pytest.raises(PasswordVoid, match="expired"):
        pw.prs(700.0)


def test_password_tries_are_limited() -> None:
    pw = OneTimePassword("12345678", issued_at=0.0, tries=3)
    for _ in range(3):
        pw.check(1.0)
        pw.spend_try(1.0)
    with pytest.raises(PasswordVoid, match="tries"):
        pw.prs(1.0)


def test_password_is_single_use() -> None:
    pw = OneTimePassword("12345678", issued_at=0.0)
    pw.succeeded()
    with pytest.raises(PasswordVoid, match="used"):
        pw.prs(1.0)


# ------------------------------------------------------------------ a run, sans-IO


def _run(typed: bytes, pw: OneTimePassword) -> tuple[bytearray, bytearray]:
    hsm = PakeInitiator(pw, hsm_serial="150001", entry_timeout_ms=200_000, now=1.0)
    ped = PakeResponder()
    init = ped.receive_init(hsm.init_frame())
    assert init.hsm_serial == "150001" and init.digits == pw.length
    frame, ped_key = ped.answer(typed)
    return hsm.receive(frame, 2.0), ped_key


def _confirm(hsm_key: bytearray, ped_key: bytearray) -> None:
    """The channel handshake both ends then run: the key confirmation."""
    initiator = ChannelInitiator(rpv=hsm_key, hsm_serial="150001")
    responder = ChannelResponder(ped_info=PedInfo())
    responder.receive_init(initiator.start())
    response, _ = responder.accept(ped_key)
    initiator.receive(response)


def test_right_password_gives_both_ends_one_key_and_confirms() -> None:
    pw = OneTimePassword("12345678", issued_at=0.0)
    hsm_key, ped_key = _run(b"12345678", pw)
    assert hsm_key == ped_key and len(hsm_key) == 32
    _confirm(hsm_key, ped_key)
    assert pw.tries_left == 2


def test_wrong_password_fails_confirmation_and_spends_a_try() -> None:
    pw = OneTimePassword("12345678", issued_at=0.0)
    hsm_key, ped_key = _run(b"12345679", pw)
    assert hsm_key != ped_key
    with pytest.raises(RpvMismatch):
        _confirm(hsm_key, ped_key)
    assert pw.tries_left == 2


def test_three_wrong_runs_void_the_password() -> None:
    pw = OneTimePassword("12345678", issued_at=0.0)
    for _ in range(3):
        _run(b"00000000", pw)
    with pytest.raises(PasswordVoid):
        PakeInitiator(pw, hsm_serial="150001", entry_timeout_ms=1000, now=3.0)


def test_runs_differ_every_time_and_carry_nothing_of_the_password() -> None:
    pw = OneTimePassword("12345678", issued_at=0.0)
    first = PakeInitiator(pw, hsm_serial="150001", entry_timeout_ms=1000, now=1.0).init_frame()
    second = PakeInitiator(pw, hsm_serial="150001", entry_timeout_ms=1000, now=1.0).init_frame()
    assert first.payload != second.payload
    assert b"12345678" not in first.payload and b"1234" not in first.payload


def test_refusal_spends_no_try() -> None:
    pw = OneTimePassword("12345678", issued_at=0.0)
    hsm = PakeInitiator(pw, hsm_serial="150001", entry_timeout_ms=1000, now=1.0)
    with pytest.raises(HandshakeRefused):
        hsm.receive(PakeResponder.refuse(RefuseReason.CANCELLED, "CLR"), 2.0)
    assert pw.tries_left == 3


def test_low_order_share_is_refused_on_both_ends() -> None:
    pw = OneTimePassword("12345678", issued_at=0.0)
    hsm = PakeInitiator(pw, hsm_serial="150001", entry_timeout_ms=1000, now=1.0)
    bad = Frame(E2EType.PAKE_RESPONSE, b"\x01" + bytes(32))
    with pytest.raises(InvalidShare):
        hsm.receive(bad, 2.0)
    init = PakeInit("150001", 1000, 8, bytes(16), bytes(32))
    ped = PakeResponder()
    ped.receive_init(init.to_frame())
    with pytest.raises(InvalidShare):
        ped.answer(b"12345678")


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x02", b"\x01\x02", b"\x01\x01\x00\x00", b"\x01\x01\x00\x01A" + bytes(60)],
)
def test_malformed_pake_init_is_a_remote_error(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        PakeResponder().receive_init(Frame(E2EType.PAKE_INIT, payload))


def test_old_ped_refuses_pake_init_cleanly() -> None:
    """A PED of before this revision answers PAKE_INIT with HANDSHAKE_REFUSED
    (unsupported), which the HSM raises as a refusal, spending no try."""
    from ped.ops import PedSideSession

    pw = OneTimePassword("12345678", issued_at=0.0)
    hsm = PakeInitiator(pw, hsm_serial="150001", entry_timeout_ms=1000, now=1.0)
    old = PedSideSession(ped_info=PedInfo())
    old.receive_frame(hsm.init_frame())
    (refusal,) = old.frames_to_send()
    with pytest.raises(HandshakeRefused) as caught:
        hsm.receive(refusal, 2.0)
    assert caught.value.reason is RefuseReason.UNSUPPORTED
    assert pw.tries_left == 3
