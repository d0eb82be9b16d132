"""Applications never wait behind an administrator at the PED, and an administrator's
login that waited at the PED sees what applications did meanwhile.

The client listener (`hsm.ntlsd`) takes the daemon's command lock only for the calls that
may wait at the PED (cloning).  Before, a C_Login, a key generation or a destroy queued
behind any shell command holding it, such as an ``hsm ped connect`` waiting minutes for
the orange key.  What that opens, and what is checked: a login that read a key while
failed application logins locked the role is refused (not counted, audited) instead of
succeeding on the role as it was read before the PED answered.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from hsm.errors import LockedOut
from hsm.ntlsd import LOCKED_OPS, NtlsListener, dispatch, ntls_identity
from hsm.pedport import PedSecret
from hsm.policy import Role
from hsmclient.remote import RemoteBackend
from hsmclient.slots import SlotMap
from ped.ntls import messages as m
from ped.ntls.messages import Op
from ped.pkcs11.constants import CKA, CKM, CKR, CKU
from ped.pkcs11.token import Attribute, Mechanism, PartitionAccess, Pkcs11Error
from ped.tls import PinStore, ensure_identity
from tests.hsm.fakeped import FakeKey
from tests.hsm.rig import CHAL, Rig
from tests.hsm.test_clients_rig import CLIENT, activated, register

P256 = bytes.fromhex("06082a8648ce3d030107")
#: Bounds a step that must not wait for the administrator (it fails, never hangs).
NOT_WAITING = 30.0


async def test_an_application_works_while_a_shell_command_waits_at_the_ped(
    rig: Rig, tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    await activated(rig, "p1")
    client_home = tmp_path / "client"
    client_home.mkdir()
    rig.hsm.clients.register(CLIENT, ensure_identity(client_home, "app-host").certificate_pem,
                             None)  # fmt: skip
    rig.hsm.clients.assign(CLIENT, "p1")
    command_lock = trio.Lock()  # the daemon's: shell commands that change state hold it
    listener = NtlsListener(rig.home, rig.hsm.serial, rig.hsm.client_access, command_lock,
                            port=0, host="127.0.0.1")  # fmt: skip
    bound = await nursery.start(listener.run)
    pins = PinStore(client_home, program="hsmclient")
    pins.register("hsm1", ntls_identity(rig.home, rig.hsm.serial).certificate_pem,
                  ip="127.0.0.1", port=bound[0][1])  # fmt: skip
    app = await RemoteBackend(client_home, pins, SlotMap(client_home)).connect()

    at_the_ped, key_presented = trio.Event(), trio.Event()
    read = rig.ped.read_secret

    async def a_person_not_there_yet(*args: Any) -> PedSecret:
        at_the_ped.set()
        await key_presented.wait()
        return await read(*args)

    monkeypatch.setattr(rig.ped, "read_secret", a_person_not_there_yet)
    rig.hsm.admin.logout()
    admin_done = trio.Event()

    async def shell_command() -> None:  # `hsm login`, as the daemon runs it: under the lock
        async with command_lock:
            await rig.hsm.admin.login(rig.notify)
        admin_done.set()

    nursery.start_soon(shell_command)
    await at_the_ped.wait()
    with trio.fail_after(NOT_WAITING):
        slot = (await app.slots())[0].slot_id
        session = await app.open_session(slot, True)
        await app.login(session, CKU.USER, bytearray(CHAL))
        pub, priv = await app.generate_key_pair(
            session,
            Mechanism(CKM.EC_KEY_PAIR_GEN),
            [Attribute(CKA.EC_PARAMS, P256), Attribute(CKA.TOKEN, True)],
            [Attribute(CKA.TOKEN, True), Attribute(CKA.SIGN, True)],
        )
        assert await app.sign(session, Mechanism(CKM.ECDSA), priv, b"\x01" * 32)
        aes = await app.generate_key(session, Mechanism(CKM.AES_KEY_GEN),
                                     [Attribute(CKA.VALUE_LEN, 32)])  # fmt: skip
        for handle in (pub, priv, aes):
            await app.destroy_object(session, handle)
        await app.logout(session)
    assert command_lock.locked() and not admin_done.is_set()  # still waiting for the person
    key_presented.set()
    await admin_done.wait()
    assert rig.hsm.state.so_logged_in
    await app.close()


async def one_wrong_guess_locks(rig: Rig) -> tuple[PartitionAccess, int]:
    """Partition p1 activated, its CO locked by one failed login (policy 20 at 1), and a
    client's session on it."""
    await activated(rig, "p1")
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    rig.hsm.partitions.changepolicy("p1", 20, 1)
    rig.hsm.roles.logout(None)
    register(rig, CLIENT, "p1")
    access = rig.hsm.client_access(CLIENT)
    return access, await access.open_session(access.partitions()[0].serial, True)


@pytest.mark.parametrize("so_resets", [False, True], ids=["policy-15-off", "policy-15-on"])
async def test_a_role_locked_by_applications_while_its_key_is_read_stays_locked(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, so_resets: bool
) -> None:
    if so_resets:  # the partition SO may reset the CO: a lockout holds until reset
        await rig.init_hsm()
        rig.hsm.admin.changepolicy(15, 1, force=True)
        await rig.init_hsm()
    access, s = await one_wrong_guess_locks(rig)  # policy 15 off: locked for good
    read = rig.ped.read_secret

    async def locked_meanwhile(*args: Any) -> PedSecret:
        with pytest.raises(Pkcs11Error) as locked:
            await access.login(s, CKU.USER, bytearray(b"a wrong guess"))
        assert locked.value.rv == CKR.PIN_LOCKED
        return await read(*args)  # then the administrator presents the right black key

    monkeypatch.setattr(rig.ped, "read_secret", locked_meanwhile)
    expected = "role resetpw --partition p1 --name co" if so_resets else "permanently locked"
    with pytest.raises(LockedOut, match=expected):
        await rig.hsm.roles.login(rig.notify, "p1", "co", None)  # `role login -name co`
    co = rig.hsm.state.store.get_role("p1", Role.CO.value)
    assert co is not None and co.failures == 1  # the refused attempt is not counted
    assert co.locked == ("reset" if so_resets else "permanent")
    if not so_resets:
        assert co.wrapped == b"" and co.wrapped_chal is None  # the wraps stay destroyed
    assert "p1" not in rig.hsm.state.ram.partition_login
    records = rig.hsm.state.audit.records()
    refused = [r for r in records if r["event"] == "login refused"]
    assert refused[-1]["reason"] == "locked-while-waiting" and refused[-1]["counted"] is False
    assert refused[-1]["role"] == "co" and refused[-1]["partition"] == "p1"
    assert records[-1]["event"] == "login refused"  # no "login" after it
    await access.close()


async def test_a_failure_counted_meanwhile_is_kept_and_the_login_goes_on(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not locked: the administrator's login counts on top of the application's failure
    and its success resets both (the counter is read afresh, nothing is lost)."""
    await activated(rig, "p1")
    register(rig, CLIENT, "p1")
    access = rig.hsm.client_access(CLIENT)
    s = await access.open_session(access.partitions()[0].serial, True)
    read = rig.ped.read_secret
    seen: list[int] = []

    async def one_failure_meanwhile(*args: Any) -> PedSecret:
        with pytest.raises(Pkcs11Error):
            await access.login(s, CKU.USER, bytearray(b"a wrong guess"))
        co = rig.hsm.state.store.get_role("p1", Role.CO.value)
        assert co is not None
        seen.append(co.failures)
        return await read(*args)

    monkeypatch.setattr(rig.ped, "read_secret", one_failure_meanwhile)
    assert "logged in" in await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    assert seen == [1]
    co = rig.hsm.state.store.get_role("p1", Role.CO.value)
    assert co is not None and co.failures == 0 and not co.locked
    await access.close()


async def test_a_key_of_another_keyset_on_a_role_locked_meanwhile_is_not_counted_again(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    access, s = await one_wrong_guess_locks(rig)
    black = rig.ped.keys["p1-co"]
    rig.ped.keys["stranger"] = FakeKey(black.color, b"x" * 32, b"another keyset")
    read = rig.ped.read_secret

    async def locked_meanwhile(*args: Any) -> PedSecret:
        with pytest.raises(Pkcs11Error):
            await access.login(s, CKU.USER, bytearray(b"a wrong guess"))
        return await read(*args)

    monkeypatch.setattr(rig.ped, "read_secret", locked_meanwhile)
    rig.ped.plan.append("stranger")  # then a black key of another keyset is presented
    with pytest.raises(LockedOut, match="permanently locked"):
        await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    co = rig.hsm.state.store.get_role("p1", Role.CO.value)
    assert co is not None and co.failures == 1 and co.locked == "permanent"
    await access.close()


async def test_every_call_outside_the_lock_runs_without_a_checkpoint(rig: Rig) -> None:
    """What lets them skip the command lock: each runs as one step of the event loop, so no
    shell command can run in its middle (`trio.testing.assert_no_checkpoints`).  A call
    that learns to await (the PED, a thread) fails here and belongs in LOCKED_OPS."""
    await activated(rig, "p1")
    register(rig, CLIENT, "p1")
    access = rig.hsm.client_access(CLIENT)
    serial = access.partitions()[0].serial
    ids = iter(range(1, 100))

    async def call(request: Callable[[int], m.Request]) -> m.Answer:
        with trio.testing.assert_no_checkpoints():
            return await dispatch(access, request(next(ids)))

    opened = await call(lambda rid: m.OpenSession(rid, serial, True))
    assert isinstance(opened, m.Handle)
    s = opened.handle
    await call(lambda rid: m.Login(rid, s, CKU.USER, bytearray(CHAL)))
    pair = await call(lambda rid: m.GenerateKeyPair(
        rid, s, Mechanism(CKM.EC_KEY_PAIR_GEN),
        (Attribute(CKA.EC_PARAMS, P256), Attribute(CKA.TOKEN, True)),
        (Attribute(CKA.TOKEN, True), Attribute(CKA.SIGN, True))))  # fmt: skip
    assert isinstance(pair, m.KeyPair)
    aes = await call(lambda rid: m.GenerateKey(rid, s, Mechanism(CKM.AES_KEY_GEN),
                                               (Attribute(CKA.VALUE_LEN, 32),)))  # fmt: skip
    assert isinstance(aes, m.Handle)
    signed = await call(lambda rid: m.Sign(rid, s, Mechanism(CKM.ECDSA), pair.private,
                                           b"\x01" * 32))  # fmt: skip
    assert isinstance(signed, m.Output)
    for handle in (pair.public, pair.private, aes.handle):
        await call(functools.partial(m.DestroyObject, session=s, handle=handle))
    await call(lambda rid: m.Logout(rid, s))
    await call(lambda rid: m.CloseSession(rid, s))
    assert {Op.CLONE_OPEN, Op.CLONE_FRAME, Op.ARCHIVE} == LOCKED_OPS
    await access.close()
