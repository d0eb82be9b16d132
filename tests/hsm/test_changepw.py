"""Changing secrets (`hsm.changepw`) on the fake PED: the old key proven and counted as a
login, the new key set imprinted, one transaction, objects reachable, activation, audit."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from hsm.access import ClientAccess
from hsm.errors import (
    InvalidCommand,
    LockedOut,
    LoginFailed,
    LoginRefused,
    NotInitialised,
    NotLoggedIn,
    PedUnavailable,
    PolicyError,
    Zeroized,
)
from hsm.pedport import PedSecret
from hsm.policy import Role
from hsm.store import HSM_SCOPE, RoleRow
from ped.pkcs11.constants import CKM, CKR, CKU
from ped.pkcs11.token import CKS_RW_PUBLIC_SESSION, Mechanism, Pkcs11Error
from tests.hsm.fakeped import FakeKey
from tests.hsm.rig import CHAL, Rig
from tests.hsm.test_clients_rig import CLIENT, activated, register
from tests.hsm.test_token_keys import EC_PRIV, EC_PUB

NEW_CHAL = b"a brand new challenge"


def row(rig: Rig, scope: str, role: Role) -> RoleRow:
    r = rig.store.get_role(scope, role.value)
    assert r is not None
    return r


def audit(rig: Rig, event: str) -> list[dict[str, object]]:
    lines = (rig.home / "audit.log").read_text().splitlines()
    return [rec for rec in map(json.loads, lines) if rec.get("event") == event]


# ---------------------------------------------------------------------- HSM SO


async def test_hsm_changepw_old_blue_key_fails_counted_new_one_works(rig: Rig) -> None:
    await rig.init_partition("p1")
    before = row(rig, HSM_SCOPE, Role.HSM_SO).keyset_id
    rig.ped.plan.extend(["blue0", "blue-new"])  # the proof, then the new key set
    out = await rig.hsm.admin.changepw(rig.notify)
    assert "HSM SO: PED secret changed" in out and "old key no longer does" in out
    assert row(rig, HSM_SCOPE, Role.HSM_SO).keyset_id != before
    assert rig.hsm.state.so_logged_in  # the SO stays logged in
    rig.hsm.admin.logout()
    rig.ped.plan.append("blue0")  # the old key: another keyset now, counted
    with pytest.raises(LoginFailed, match="1 consecutive failure"):
        await rig.hsm.admin.login(rig.notify)
    rig.ped.plan.append("blue-new")
    assert await rig.hsm.admin.login(rig.notify) == "HSM SO logged in."
    assert row(rig, HSM_SCOPE, Role.HSM_SO).failures == 0
    # the partition made before is still there and its SO still logs in
    assert rig.hsm.admin.show()["partitions"] == ["p1"]
    (rec,) = audit(rig, "secret changed")
    assert rec["role"] == "hsm-so" and rec["by"] == "hsm-so" and rec["secret"] is True
    assert rec["challenge"] is False
    text = (rig.home / "audit.log").read_text()
    assert rig.ped.keys["blue-new"].secret.hex() not in text


async def test_hsm_changepw_needs_the_so_logged_in_and_asks_nothing(rig: Rig) -> None:
    await rig.init_hsm()
    rig.hsm.admin.logout()
    reads = rig.ped.reads
    with pytest.raises(NotLoggedIn, match="hsm login"):
        await rig.hsm.admin.changepw(rig.notify)
    assert rig.ped.reads == reads


async def test_a_wrong_old_key_is_counted_as_a_login_and_zeroizes_at_three(rig: Rig) -> None:
    await rig.init_partition("p1")
    rig.ped.plan.append(("pin", "blue0"))  # a wrong PIN: counted
    with pytest.raises(LoginFailed, match="1 consecutive failure"):
        await rig.hsm.admin.changepw(rig.notify)
    rig.ped.keys["stranger"] = FakeKey(rig.ped.keys["blue0"].color, b"x" * 32, b"other-ks")
    rig.ped.plan.append("stranger")  # a blue key of another keyset: counted
    with pytest.raises(LoginFailed, match="another keyset"):
        await rig.hsm.admin.changepw(rig.notify)
    rig.ped.plan.append("red1")  # a wrong colour: refused, not counted
    with pytest.raises(LoginRefused):
        await rig.hsm.admin.changepw(rig.notify)
    assert row(rig, HSM_SCOPE, Role.HSM_SO).failures == 2
    rig.ped.plan.append(("pin", "blue0"))
    with pytest.raises(Zeroized):
        await rig.hsm.admin.changepw(rig.notify)
    assert any("Caution: 1 HSM SO login attempt left" in n for n in rig.notes)  # as a login
    assert not rig.hsm.state.initialised


async def test_reusing_the_roles_own_keyset_is_refused_and_changes_nothing(rig: Rig) -> None:
    await rig.init_hsm()
    before = row(rig, HSM_SCOPE, Role.HSM_SO)
    rig.ped.plan.extend(["blue0", ("reuse", "blue0", "blue0-again")])
    with pytest.raises(PolicyError, match=r"keeps the old secret.*answer NO to 'Reuse"):
        await rig.hsm.admin.changepw(rig.notify)
    assert row(rig, HSM_SCOPE, Role.HSM_SO) == before
    assert audit(rig, "secret changed") == []


async def test_reusing_another_keyset_is_allowed(rig: Rig) -> None:
    await rig.init_partition("p1")
    # the partition SO takes the HSM SO's blue key set (shared blue keys, as Luna allows)
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    rig.ped.plan.extend(["p1-so", ("reuse", "blue0", "shared")])
    out = await rig.hsm.roles.changepw(rig.notify, "p1", "so", None)
    assert "an existing blue key set now opens it" in out
    assert row(rig, "p1", Role.PARTITION_SO).keyset_id == rig.ped.keys["blue0"].keyset_id
    assert audit(rig, "secret changed")[-1]["reused_keyset"] is True


async def test_a_ped_refusal_during_the_imprint_changes_nothing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rig.init_hsm()
    before = row(rig, HSM_SCOPE, Role.HSM_SO)

    async def cancelled(*args: object) -> None:
        raise PedUnavailable("the PED operation was cancelled", outcome="cancelled")

    monkeypatch.setattr(rig.ped, "imprint", cancelled)
    with pytest.raises(PedUnavailable):
        await rig.hsm.admin.changepw(rig.notify)
    monkeypatch.undo()
    assert row(rig, HSM_SCOPE, Role.HSM_SO) == before
    rig.hsm.admin.logout()
    await rig.hsm.admin.login(rig.notify)  # the old key still opens it


# ---------------------------------------------------------------------- partition SO


async def test_partition_changepw_keeps_the_co_escrow_for_resetpw(rig: Rig) -> None:
    await rig.init_hsm()
    rig.hsm.admin.changepolicy(15, 1, force=True)  # zeroizes: SO can reset the CO
    await rig.init_partition("p1")
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    rig.ped.plan.extend(["p1-so", "p1-so-new"])
    out = await rig.hsm.roles.changepw(rig.notify, "p1", "so", None)
    assert out.startswith("Partition SO of partition 'p1': PED secret changed")
    rig.hsm.roles.logout("p1")
    rig.ped.plan.append("p1-so")
    with pytest.raises(LoginFailed):
        await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    rig.ped.plan.append("p1-so-new")
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    rig.ped.plan.append("p1-co2")
    assert "reset" in await rig.hsm.roles.resetpw(rig.notify, "p1", "co", CHAL)


async def test_partition_changepw_refusals(rig: Rig) -> None:
    await rig.init_partition("p1")
    rig.hsm.roles.logout(None)
    with pytest.raises(NotLoggedIn, match="role login --partition p1 --name so"):
        await rig.hsm.roles.changepw(rig.notify, "p1", "so", None)
    with pytest.raises(InvalidCommand, match="no challenge"):
        await rig.hsm.roles.changepw(rig.notify, "p1", "so", None, challenge_only=True)
    rig.hsm.partitions.create("p2")
    with pytest.raises(NotInitialised, match="partition init --name p2"):
        await rig.hsm.roles.changepw(rig.notify, "p2", "so", None)


# ---------------------------------------------------------------------- CO and CU


async def _co_with_object(rig: Rig) -> None:
    await activated(rig, "p1", with_cu=True)
    await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    rig.hsm.objects.create("p1", "k1", b"value one")


async def test_co_changepw_both_new_key_new_challenge_objects_stay(rig: Rig) -> None:
    await _co_with_object(rig)
    assert ("p1", "co") in rig.hsm.state.ram.activation
    rig.ped.plan.extend(["p1-co", "p1-co-new"])
    out = await rig.hsm.roles.changepw(rig.notify, "p1", "co", NEW_CHAL)
    assert "PED secret and challenge secret changed" in out and "deactivated" in out
    assert ("p1", "co") not in rig.hsm.state.ram.activation  # a new challenge deactivates
    assert ("p1", "cu") in rig.hsm.state.ram.activation  # the CU is not touched
    # the shell login of the CO stays (the data key did not change)
    assert [o["label"] for o in rig.hsm.objects.list_objects("p1")] == ["k1"]
    rig.hsm.roles.logout(None)
    rig.ped.plan.append("p1-co")
    with pytest.raises(LoginFailed, match="1 consecutive"):
        await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    rig.ped.plan.append("p1-co-new")
    await rig.hsm.roles.activate(rig.notify, "p1", "co")
    with pytest.raises(LoginFailed, match="wrong challenge"):
        await rig.hsm.roles.login(rig.notify, "p1", "co", CHAL)  # the old challenge
    await rig.hsm.roles.login(rig.notify, "p1", "co", NEW_CHAL)
    digest = hashlib.sha256(b"value one").hexdigest()
    assert [o["sha256"] for o in rig.hsm.objects.list_objects("p1")] == [digest]
    (rec,) = audit(rig, "secret changed")
    assert rec == rec | {"role": "co", "partition": "p1", "by": "co", "secret": True,
                         "challenge": True, "deactivated": True}  # fmt: skip
    text = (rig.home / "audit.log").read_text()
    assert NEW_CHAL.decode() not in text and NEW_CHAL.hex() not in text


async def test_challenge_only_keeps_the_key_and_refuses_the_current_challenge(rig: Rig) -> None:
    await _co_with_object(rig)
    before = row(rig, "p1", Role.CO).keyset_id
    rig.ped.plan.append("p1-co")
    with pytest.raises(PolicyError, match="the current one"):
        await rig.hsm.roles.changepw(rig.notify, "p1", "co", CHAL, challenge_only=True)
    assert ("p1", "co") in rig.hsm.state.ram.activation  # refused: nothing changed
    reads = rig.ped.reads
    out = await rig.hsm.roles.changepw(rig.notify, "p1", "co", NEW_CHAL, challenge_only=True)
    assert rig.ped.reads == reads + 1  # the PED key was read (not the activation cache)
    assert "challenge secret changed" in out and "key set" not in out
    assert row(rig, "p1", Role.CO).keyset_id == before
    await rig.hsm.roles.activate(rig.notify, "p1", "co")  # the same black key
    await rig.hsm.roles.login(rig.notify, "p1", "co", NEW_CHAL)


async def test_a_generated_challenge_is_shown_on_the_ped(rig: Rig) -> None:
    await _co_with_object(rig)
    rig.ped.plan.append("p1-co")
    out = await rig.hsm.roles.changepw(rig.notify, "p1", "co", None, challenge_only=True)
    assert "shown on the PED screen" in out
    shown = rig.ped.shown[-1]
    assert shown.startswith("Crypto Officer new challenge secret: ")
    new = shown.split(": ", 1)[1].encode()
    await rig.hsm.roles.activate(rig.notify, "p1", "co")
    await rig.hsm.roles.login(rig.notify, "p1", "co", new)


async def test_secret_only_needs_the_current_challenge_and_keeps_activation(rig: Rig) -> None:
    await activated(rig, "p1", auto=True)
    await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    with pytest.raises(InvalidCommand, match="--secret-only keeps the challenge"):
        await rig.hsm.roles.changepw(rig.notify, "p1", "co", None, secret_only=True)
    reads = rig.ped.reads
    rig.ped.plan.append("p1-co")  # the right key, a wrong current challenge: counted
    with pytest.raises(LoginFailed, match="challenge secret"):
        await rig.hsm.roles.changepw(rig.notify, "p1", "co", b"not it", secret_only=True)
    assert rig.ped.reads == reads + 1  # the PED was asked even though the CO is activated
    assert row(rig, "p1", Role.CO).failures == 1
    assert ("p1", "co") in rig.hsm.state.ram.activation  # a failure does not deactivate
    rig.ped.plan.extend(["p1-co", "p1-co-new"])
    out = await rig.hsm.roles.changepw(rig.notify, "p1", "co", CHAL, secret_only=True)
    assert "PED secret changed" in out and "deactivated" not in out
    assert row(rig, "p1", Role.CO).failures == 0
    # still activated, now with the new secret: the same challenge logs in without the PED
    reads = rig.ped.reads
    await rig.hsm.roles.login(rig.notify, "p1", "co", CHAL)
    assert rig.ped.reads == reads
    # the sealed cache was replaced in the same transaction: it survives a power cycle
    rig.power_cycle(off_for=60)
    assert ("p1", "co") in rig.hsm.state.ram.activation
    await rig.hsm.roles.login(rig.notify, "p1", "co", CHAL)
    assert row(rig, "p1", Role.CO).failures == 0


async def test_cu_changepw_by_the_partition_so(rig: Rig) -> None:
    await activated(rig, "p1", with_cu=True)
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    rig.ped.plan.extend(["p1-cu", "p1-cu-new"])
    out = await rig.hsm.roles.changepw(rig.notify, "p1", "cu", NEW_CHAL)
    assert out.startswith("Crypto User of partition 'p1'")
    assert audit(rig, "secret changed")[-1]["by"] == "so"
    rig.ped.plan.append("p1-cu-new")
    await rig.hsm.roles.login(rig.notify, "p1", "cu", None)


async def test_role_changepw_refusals(rig: Rig) -> None:
    await rig.init_partition("p1")  # CO initialised, the partition SO logged in
    with pytest.raises(NotInitialised, match="role init --partition p1 --name cu"):
        await rig.hsm.roles.changepw(rig.notify, "p1", "cu", NEW_CHAL)
    with pytest.raises(InvalidCommand, match="exclude each other"):
        await rig.hsm.roles.changepw(rig.notify, "p1", "co", NEW_CHAL, challenge_only=True,
                                     secret_only=True)  # fmt: skip
    rig.hsm.roles.logout(None)
    reads = rig.ped.reads
    with pytest.raises(NotLoggedIn, match="Crypto Officer or Partition SO"):
        await rig.hsm.roles.changepw(rig.notify, "p1", "co", NEW_CHAL)
    assert rig.ped.reads == reads


async def test_a_locked_role_is_refused_before_the_ped(rig: Rig) -> None:
    await rig.init_hsm()
    rig.hsm.admin.changepolicy(15, 1, force=True)
    await rig.init_partition("p1")
    rig.hsm.partitions.changepolicy("p1", 20, 1)
    rig.ped.plan.append(("pin", "p1-co"))
    with pytest.raises(LockedOut):
        await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    reads = rig.ped.reads
    with pytest.raises(LockedOut, match="role resetpw"):
        await rig.hsm.roles.changepw(rig.notify, "p1", "co", NEW_CHAL)
    assert rig.ped.reads == reads


# ---------------------------------------------------------------------- crash, client path


async def test_a_crash_before_the_commit_leaves_the_old_key(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _co_with_object(rig)

    def power_cut(*args: object, **kwargs: object) -> None:
        raise SystemExit("power cut inside the transaction")

    monkeypatch.setattr(rig.store, "delete_activation", power_cut)  # after update_role
    rig.ped.plan.extend(["p1-co", "p1-co-new"])
    with pytest.raises(SystemExit):
        await rig.hsm.roles.changepw(rig.notify, "p1", "co", NEW_CHAL)
    monkeypatch.undo()
    rig.crash()
    rig.ped.plan.append("p1-co")
    await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    assert [o["label"] for o in rig.hsm.objects.list_objects("p1")] == ["k1"]


async def test_a_key_made_before_signs_after_and_a_new_challenge_ends_client_logins(
    rig: Rig,
) -> None:
    await activated(rig, "p1")
    register(rig, CLIENT, "p1")
    access = rig.hsm.client_access(CLIENT)
    assert isinstance(access, ClientAccess)
    serial = access.partitions()[0].serial
    s = await access.open_session(serial, True)
    await access.login(s, CKU.USER, bytearray(CHAL))
    _, priv = await access.generate_key_pair(s, Mechanism(CKM.EC_KEY_PAIR_GEN), EC_PUB, EC_PRIV)
    digest = hashlib.sha256(b"before").digest()
    await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    # a new key, same challenge: the application's login stays
    rig.ped.plan.extend(["p1-co", "p1-co-new"])
    await rig.hsm.roles.changepw(rig.notify, "p1", "co", CHAL, secret_only=True)
    assert await access.sign(s, Mechanism(CKM.ECDSA), priv, digest)
    # a new challenge: the role is deactivated, the application's login ends
    rig.ped.plan.append("p1-co-new")
    await rig.hsm.roles.changepw(rig.notify, "p1", "co", NEW_CHAL, challenge_only=True)
    with pytest.raises(Pkcs11Error) as ended:
        await access.sign(s, Mechanism(CKM.ECDSA), priv, digest)
    assert ended.value.rv == CKR.KEY_HANDLE_INVALID  # the private key is no longer visible
    assert access.session_state(s) == CKS_RW_PUBLIC_SESSION
    rig.ped.plan.append("p1-co-new")
    await rig.hsm.roles.activate(rig.notify, "p1", "co")
    with pytest.raises(Pkcs11Error) as old:
        await access.login(s, CKU.USER, bytearray(CHAL))
    assert old.value.rv == CKR.PIN_INCORRECT
    await access.login(s, CKU.USER, bytearray(NEW_CHAL))
    assert await access.sign(s, Mechanism(CKM.ECDSA), priv, digest)
    await access.close()


async def test_client_calls_while_the_ped_is_read_keep_their_login(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    await activated(rig, "p1")
    register(rig, CLIENT, "p1")
    access = rig.hsm.client_access(CLIENT)
    assert isinstance(access, ClientAccess)
    s = await access.open_session(access.partitions()[0].serial, True)
    await access.login(s, CKU.USER, bytearray(CHAL))
    _, priv = await access.generate_key_pair(s, Mechanism(CKM.EC_KEY_PAIR_GEN), EC_PUB, EC_PRIV)
    digest = hashlib.sha256(b"meanwhile").digest()
    read = rig.ped.read_secret
    signed: list[bytes] = []

    async def read_while_signing(*args: Any) -> PedSecret:
        # the client path does not wait for the shell's PED operation: it signs meanwhile
        signed.append(await access.sign(s, Mechanism(CKM.ECDSA), priv, digest))
        return await read(*args)

    monkeypatch.setattr(rig.ped, "read_secret", read_while_signing)
    await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    rig.ped.plan.extend(["p1-co", "p1-co-new"])
    await rig.hsm.roles.changepw(rig.notify, "p1", "co", CHAL, secret_only=True)
    assert len(signed) == 2  # the shell's login and the change's proof
    assert access.session_state(s) != CKS_RW_PUBLIC_SESSION
    assert await access.sign(s, Mechanism(CKM.ECDSA), priv, digest)
    await access.close()


async def test_a_role_locked_by_applications_during_the_imprint_is_not_rewrapped(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    await activated(rig, "p1")  # HSM policy 15 off: a CO lockout is permanent
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    rig.hsm.partitions.changepolicy("p1", 20, 1)
    register(rig, CLIENT, "p1")
    access = rig.hsm.client_access(CLIENT)
    s = await access.open_session(access.partitions()[0].serial, True)
    imprint = rig.ped.imprint

    async def locked_meanwhile(*args: Any) -> PedSecret:
        with pytest.raises(Pkcs11Error) as locked:
            await access.login(s, CKU.USER, bytearray(b"a wrong guess"))
        assert locked.value.rv == CKR.PIN_LOCKED
        return await imprint(*args)

    monkeypatch.setattr(rig.ped, "imprint", locked_meanwhile)
    rig.ped.plan.extend(["p1-co", "p1-co-new"])
    with pytest.raises(LockedOut, match="while the PED was busy; nothing was changed"):
        await rig.hsm.roles.changepw(rig.notify, "p1", "co", NEW_CHAL)
    co = row(rig, "p1", Role.CO)
    assert co.locked == "permanent" and co.wrapped == b"" and co.wrapped_chal is None
    assert audit(rig, "secret changed") == []
    await access.close()


# ---------------------------------------------------------------------- the shell


def test_a_typed_challenge_is_asked_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    from hsm import cli, shellparser

    argv = ["role", "changePw", "-p", "p1", "-name", "co", "-challenge-file", "-"]
    luna = cli.normalize_luna_argv(argv, cli.COMMAND_WORDS)
    words = cli.resolve_words(shellparser.build_parser(), luna)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    typed = iter(["new one", "new one", "new one", "new 0ne"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(typed))
    ns = shellparser.build_parser().parse_args(words)
    assert ns.command == "role.changepw" and ns.partition == "p1" and ns.name == "co"
    assert cli._request_args(ns)["challenge"] == b"new one".hex()
    with pytest.raises(shellparser.HsmUsageError, match="differ"):
        shellparser.build_parser().parse_args(words)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(shellparser.HsmUsageError, match="there is none"):
        shellparser.build_parser().parse_args(words)
