"""The client path's failed-login table: what is counted, what is not, and restarts."""

from __future__ import annotations

import logging

import pytest

from hsm.policy import Role
from ped.pkcs11.constants import CKF_TOKEN, CKM, CKR, CKU
from ped.pkcs11.token import Mechanism, PartitionAccess, Pkcs11Error
from tests.hsm.rig import CHAL, Rig
from tests.hsm.test_clients_rig import CLIENT, activated, register
from tests.hsm.test_token_keys import EC_PRIV, EC_PUB


def failures(rig: Rig, role: Role = Role.CO, partition: str = "p1") -> int:
    row = rig.hsm.state.store.get_role(partition, role.value)
    assert row is not None
    return row.failures


async def _session(rig: Rig, partition: str = "p1") -> tuple[PartitionAccess, int]:
    access = rig.hsm.client_access(CLIENT)
    serial = next(p.serial for p in access.partitions() if p.label == partition)
    return access, await access.open_session(serial, True)


async def _login_rv(access: PartitionAccess, session: int, pin: bytes, user: int = CKU.USER) -> int:
    try:
        await access.login(session, user, bytearray(pin))
    except Pkcs11Error as exc:
        return exc.rv
    return CKR.OK


async def test_a_partition_not_assigned_is_invisible_and_not_counted(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    await activated(rig, "p1")
    await activated(rig, "p2")
    register(rig, CLIENT, "p1")
    access = rig.hsm.client_access(CLIENT)
    assert [p.label for p in access.partitions()] == ["p1"]
    other = rig.hsm.state.store.get_partition("p2")
    assert other is not None
    with caplog.at_level(logging.WARNING, logger="pedhsm.clients"):
        with pytest.raises(Pkcs11Error) as refused:
            await access.open_session(other.serial, True)
    assert refused.value.rv == CKR.TOKEN_NOT_PRESENT
    assert "client assignpartition --client app1" in str(refused.value)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("client app1: ") and "not counted" in line and "fix:" in line
    with pytest.raises(Pkcs11Error) as unknown:
        await access.open_session("999999999", True)
    assert unknown.value.rv == CKR.SLOT_ID_INVALID
    assert failures(rig, partition="p2") == 0


async def test_an_unactivated_role_is_refused_without_the_ped_and_not_counted(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    await activated(rig, activate=False)
    register(rig, CLIENT, "p1")
    access, s = await _session(rig)
    assert not access.partitions()[0].activated
    reads = rig.ped.reads
    with caplog.at_level(logging.WARNING, logger="pedhsm.clients"):
        rv = await _login_rv(access, s, CHAL)
    assert rv == CKR.USER_PIN_NOT_INITIALIZED
    assert rig.ped.reads == reads
    assert failures(rig) == 0
    line = caplog.records[-1].getMessage()
    assert "role activate --partition p1 --name co" in line and "on the HSM" in line
    info = await access.token_info(access.partitions()[0].serial)
    assert not info.flags & CKF_TOKEN.USER_PIN_INITIALIZED


async def test_a_wrong_challenge_is_counted_and_a_success_resets(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    await activated(rig)
    register(rig, CLIENT, "p1")
    access, s = await _session(rig)
    with caplog.at_level(logging.WARNING, logger="pedhsm.clients"):
        assert await _login_rv(access, s, b"Zq9-not-it") == CKR.PIN_INCORRECT
    assert failures(rig) == 1
    assert "(counted)" in caplog.records[-1].getMessage()
    assert all(b"Zq9-not-it" not in r.getMessage().encode() for r in caplog.records)
    events = [e["event"] for e in rig.hsm.state.audit.records()]
    assert events.count("login failed") == 1
    assert await _login_rv(access, s, CHAL) == CKR.OK
    assert failures(rig) == 0
    # both records name the client the attempt came from, as its logouts do
    logins = [e for e in rig.hsm.state.audit.records() if e["event"].startswith("login")]
    assert [(e["event"], e.get("client")) for e in logins[-2:]] == [
        ("login failed", CLIENT), ("login", CLIENT)]
    assert await _login_rv(access, s, CHAL) == CKR.USER_ALREADY_LOGGED_IN


async def test_lockout_as_on_the_shell_then_locked_is_not_counted_again(rig: Rig) -> None:
    await activated(rig)
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    rig.hsm.partitions.changepolicy("p1", 20, 3)
    rig.hsm.roles.logout(None)
    register(rig, CLIENT, "p1")
    access, s = await _session(rig)
    assert await _login_rv(access, s, b"bad1") == CKR.PIN_INCORRECT
    assert await _login_rv(access, s, b"bad2") == CKR.PIN_INCORRECT
    info = await access.token_info(access.partitions()[0].serial)
    assert info.flags & CKF_TOKEN.USER_PIN_FINAL_TRY
    assert await _login_rv(access, s, b"bad3") == CKR.PIN_LOCKED
    row = rig.hsm.state.store.get_role("p1", "co")
    assert row is not None and row.locked == "permanent" and row.failures == 3
    # locked: refused, not counted again, whatever is presented
    assert await _login_rv(access, s, CHAL) == CKR.PIN_LOCKED
    assert failures(rig) == 3


async def test_policy_15_on_lock_until_reset(rig: Rig) -> None:
    await rig.init_hsm()
    rig.hsm.admin.changepolicy(15, 1, force=True)
    await rig.init_hsm()
    await activated(rig)
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    rig.hsm.partitions.changepolicy("p1", 20, 2)
    rig.hsm.roles.logout(None)
    register(rig, CLIENT, "p1")
    access, s = await _session(rig)
    assert await _login_rv(access, s, b"bad") == CKR.PIN_INCORRECT
    try:
        await access.login(s, CKU.USER, bytearray(b"bad"))
    except Pkcs11Error as exc:
        assert exc.rv == CKR.PIN_LOCKED
        assert "role resetpw --partition p1 --name co" in str(exc)
    row = rig.hsm.state.store.get_role("p1", "co")
    assert row is not None and row.locked == "reset"


async def test_restarts_never_add_attempts(rig: Rig) -> None:
    await activated(rig, auto=True)
    register(rig, CLIENT, "p1")
    access, s = await _session(rig)
    assert await _login_rv(access, s, b"bad") == CKR.PIN_INCORRECT
    assert await _login_rv(access, s, b"bad") == CKR.PIN_INCORRECT
    await access.close()
    assert failures(rig) == 2
    rig.power_cycle(off_for=60)
    assert failures(rig) == 2
    rig.crash()
    assert failures(rig) == 2
    access, s = await _session(rig)
    assert await _login_rv(access, s, CHAL) == CKR.OK
    assert failures(rig) == 0


async def test_closing_the_connection_logs_out_and_is_not_counted(rig: Rig) -> None:
    await activated(rig)
    register(rig, CLIENT, "p1")
    access, s = await _session(rig)
    assert await _login_rv(access, s, CHAL) == CKR.OK
    await access.close()
    assert failures(rig) == 0
    with pytest.raises(Pkcs11Error) as closed:
        await access.generate_random(s, 1)
    assert closed.value.rv == CKR.SESSION_HANDLE_INVALID
    assert [e["event"] for e in rig.hsm.state.audit.records()][-1] == "logout"


async def test_the_crypto_user_logs_in_with_its_own_challenge(rig: Rig) -> None:
    await activated(rig, with_cu=True)
    register(rig, CLIENT, "p1")
    access, s = await _session(rig)
    assert await _login_rv(access, s, CHAL, CKU.CRYPTO_USER) == CKR.PIN_INCORRECT
    assert failures(rig, Role.CU) == 1 and failures(rig, Role.CO) == 0
    assert await _login_rv(access, s, CHAL + b"-cu", CKU.CRYPTO_USER) == CKR.OK
    assert await _login_rv(access, s, CHAL, CKU.USER) == CKR.USER_ANOTHER_ALREADY_LOGGED_IN
    assert await _login_rv(access, s, CHAL, CKU.SO) == CKR.USER_TYPE_INVALID


async def test_revocation_applies_at_once(rig: Rig) -> None:
    await activated(rig)
    register(rig, CLIENT, "p1")
    access, s = await _session(rig)
    assert await _login_rv(access, s, CHAL) == CKR.OK
    rig.hsm.clients.revoke(CLIENT, "p1")
    with pytest.raises(Pkcs11Error) as gone:
        await access.generate_random(s, 1)
    assert gone.value.rv == CKR.TOKEN_NOT_PRESENT
    assert access.partitions() == []


async def test_a_pin_of_impossible_length_is_not_counted(rig: Rig) -> None:
    await activated(rig)
    register(rig, CLIENT, "p1")
    access, s = await _session(rig)
    assert await _login_rv(access, s, b"") == CKR.PIN_LEN_RANGE
    assert await _login_rv(access, s, b"x" * 257) == CKR.PIN_LEN_RANGE
    assert failures(rig) == 0


async def test_deactivating_the_role_ends_a_clients_login_at_once(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    await activated(rig)
    register(rig, CLIENT, "p1")
    access, s = await _session(rig)
    assert await _login_rv(access, s, CHAL) == CKR.OK
    _, priv = await access.generate_key_pair(s, Mechanism(CKM.EC_KEY_PAIR_GEN), EC_PUB, EC_PRIV)
    assert await access.sign(s, Mechanism(CKM.ECDSA), priv, b"\0" * 32)
    rig.hsm.roles.deactivate("p1", "co")
    with caplog.at_level(logging.WARNING, logger="pedhsm.clients"):
        with pytest.raises(Pkcs11Error) as ended:
            await access.sign(s, Mechanism(CKM.ECDSA), priv, b"\0" * 32)
    # The login is gone, so the private key is invisible (PKCS#11: as if not there).
    assert ended.value.rv == CKR.KEY_HANDLE_INVALID and "log in" in str(ended.value)
    assert any("deactivated on the HSM" in r.getMessage() for r in caplog.records)
    assert await _login_rv(access, s, CHAL) == CKR.USER_PIN_NOT_INITIALIZED
    assert failures(rig) == 0
