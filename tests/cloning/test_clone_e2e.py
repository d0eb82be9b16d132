"""Cloning single objects end to end: two pedhsm HSMs (in-process, each behind its client
listener on port 0), hsmclient's `RemoteApplication` relaying the cloning frames unread."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from hsm.access import ClientAccess
from hsm.cloning import CloneTarget
from hsm.crypto import MasterKey
from hsm.engine import Hsm
from hsm.ntlsd import NtlsListener, ntls_identity
from hsm.store import Store
from hsm.token.vault import SessionObjects, Vault
from hsmclient.commands_clone import objects_by_label, relay_clone
from hsmclient.remote import RemoteApplication, RemoteBackend
from hsmclient.slots import SlotMap
from ped.ntls.messages import CloneFrame, CloneOpen, CloneRole
from ped.pkcs11.constants import CKA, CKM, CKR, CKU
from ped.pkcs11.token import Attribute, Mechanism, PartitionAccess, Pkcs11Error
from ped.tls import PinStore, ensure_identity
from tests.hsm.rig import CHAL, Rig
from tests.hsm.test_clients_rig import CLIENT, activated

EC_PUB = [Attribute(CKA.TOKEN, True), Attribute(CKA.LABEL, b"app-key"),
          Attribute(CKA.EC_PARAMS, bytes.fromhex("06082a8648ce3d030107")),
          Attribute(CKA.VERIFY, True)]  # fmt: skip
EC_PRIV = [Attribute(CKA.TOKEN, True), Attribute(CKA.LABEL, b"app-key"),
           Attribute(CKA.PRIVATE, True), Attribute(CKA.SENSITIVE, True),
           Attribute(CKA.SIGN, True)]  # fmt: skip
DIGEST = hashlib.sha256(b"cloned and still signing").digest()


class TargetRig(Rig):
    """A second HSM (its own serial), whose partition p1 may join another's domain."""

    def boot(self) -> None:
        self.store = Store(self.home)
        self.master = MasterKey.load_or_create(self.home)
        self.hsm = Hsm(self.home, self.store, self.master, self.clock, self.router, "150002")
        self.boot_notes = self.hsm.power_on()


async def _activated_in_domain_of(rig: Rig, source: Rig) -> None:
    """Partition p1 of *rig* reads *source*'s red key set (same domain), CO activated."""
    await rig.init_hsm()
    rig.hsm.partitions.create("p1")
    rig.ped.keys["source-red"] = source.ped.keys["p1-dom"]
    rig.ped.plan.extend(["p1-so", "source-red"])
    await rig.hsm.partitions.init(rig.notify, "p1", domain_from_red_key=True)
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    rig.ped.plan.append("p1-co")
    await rig.hsm.roles.init(rig.notify, "p1", "co", CHAL)
    rig.hsm.partitions.changepolicy("p1", 22, 1)
    await rig.hsm.roles.activate(rig.notify, "p1", "co")
    rig.hsm.roles.logout(None)


@attrs.define
class Pair:
    source: Rig
    target: Rig
    app: RemoteApplication
    accesses: dict[str, list[ClientAccess]]
    sessions: tuple[int, int]
    slots: tuple[int, int]
    backend: RemoteBackend
    nursery: trio.Nursery


@asynccontextmanager
async def two_hsms(tmp_path: Path, *, same_domain: bool,
                   client_home: Path | None = None) -> AsyncIterator[Pair]:  # fmt: skip
    homes = [tmp_path / "hsm1", tmp_path / "hsm2"]
    for home in homes:
        home.mkdir(mode=0o700)
    source, target = Rig(homes[0]), TargetRig(homes[1])
    await activated(source, "p1")
    if same_domain:
        await _activated_in_domain_of(target, source)
    else:
        await activated(target, "p1")
    client_home = client_home or tmp_path / "client"
    client = ensure_identity(client_home, "app-host")
    pins = PinStore(client_home, program="hsmclient")
    accesses: dict[str, list[ClientAccess]] = {"hsm1": [], "hsm2": []}

    def factory(rig: Rig, name: str) -> Callable[[str], PartitionAccess]:
        def make(client_name: str) -> PartitionAccess:
            access = rig.hsm.client_access(client_name)
            assert isinstance(access, ClientAccess)
            accesses[name].append(access)
            return access
        return make

    try:
        async with trio.open_nursery() as nursery:
            for name, rig in (("hsm1", source), ("hsm2", target)):
                rig.hsm.clients.register(CLIENT, client.certificate_pem, None)
                rig.hsm.clients.assign(CLIENT, "p1")
                listener = NtlsListener(rig.home, rig.hsm.serial, factory(rig, name),
                                        trio.Lock(), port=0, host="127.0.0.1")  # fmt: skip
                bound = await nursery.start(listener.run)
                pins.register(name, ntls_identity(rig.home, rig.hsm.serial).certificate_pem,
                              ip="127.0.0.1", port=bound[0][1])  # fmt: skip
            backend = RemoteBackend(client_home, pins, SlotMap(client_home))
            app = await backend.connect()
            sessions, slots = [], []
            for name in ("hsm1", "hsm2"):
                slot = next(s.slot_id for s in await app.slots() if name in s.description)
                session = await app.open_session(slot, True)
                await app.login(session, CKU.USER, bytearray(CHAL))
                sessions.append(session)
                slots.append(slot)
            yield Pair(source, target, app, accesses, (sessions[0], sessions[1]),
                       (slots[0], slots[1]), backend, nursery)  # fmt: skip
            await backend.aclose()
            nursery.cancel_scope.cancel()
    finally:
        source.store.close()
        target.store.close()


def _key_values(rig: Rig, access: ClientAccess) -> list[bytes]:
    """Every non-empty key value of partition p1, unsealed with the CO's data key."""
    data_key = access._logged["p1"][1]
    vault = Vault(rig.hsm.state, "p1", SessionObjects())
    values = [bytes(vault.key_value(h, data_key)) for h, _ in rig.store.token_objects("p1")]
    return [v for v in values if v]


async def test_a_cloned_key_signs_on_the_target_and_the_relay_sees_no_key(tmp_path: Path) -> None:
    async with two_hsms(tmp_path, same_domain=True) as pair:
        app, (src, dst) = pair.app, pair.sessions
        pub, _ = await app.generate_key_pair(src, Mechanism(CKM.EC_KEY_PAIR_GEN), EC_PUB, EC_PRIV)
        handles = await objects_by_label(app, src, ["app-key"])
        assert len(handles) == 2
        hops: list[bytes] = []
        assert await relay_clone(app, src, dst, handles, tap=hops.append) == 2

        found = await app.find_objects(dst, [Attribute(CKA.LABEL, b"app-key"),
                                             Attribute(CKA.SIGN, True)])  # fmt: skip
        assert len(found) == 1
        signature = await app.sign(dst, Mechanism(CKM.ECDSA), found[0], DIGEST)
        await app.verify(src, Mechanism(CKM.ECDSA), pub, DIGEST, signature)

        secrets_ = _key_values(pair.source, pair.accesses["hsm1"][0])
        assert secrets_ and secrets_ == _key_values(pair.target, pair.accesses["hsm2"][0])
        tapped = b"".join(hops)
        assert len(hops) == 4  # INIT, ACCEPT, objects + end, RESULT
        assert not any(value in tapped for value in secrets_)
        assert b"app-key" not in tapped  # even the attributes travel sealed
        assert any("objects cloned in" in line for line in _audit(pair.target))


async def test_another_domain_is_refused_at_the_handshake_and_nothing_is_created(
    tmp_path: Path,
) -> None:
    async with two_hsms(tmp_path, same_domain=False) as pair:
        app, (src, dst) = pair.app, pair.sessions
        await app.generate_key_pair(src, Mechanism(CKM.EC_KEY_PAIR_GEN), EC_PUB, EC_PRIV)
        handles = await objects_by_label(app, src, ["app-key"])
        hops: list[bytes] = []
        with pytest.raises(Pkcs11Error) as caught:
            await relay_clone(app, src, dst, handles, tap=hops.append)
        assert caught.value.rv == CKR.FUNCTION_FAILED
        message = str(caught.value)
        assert "different cloning domains" in message
        assert "--domain-from-red-key" in message
        assert len(hops) == 2  # CLONE_INIT and CLONE_REFUSED: no object moved
        assert pair.target.store.token_objects("p1") == []
        assert not await app.find_objects(dst, [])


async def test_a_clone_needs_the_crypto_officer_logged_in(tmp_path: Path) -> None:
    async with two_hsms(tmp_path, same_domain=True) as pair:
        app, (src, dst) = pair.app, pair.sessions
        await app.generate_key_pair(src, Mechanism(CKM.EC_KEY_PAIR_GEN), EC_PUB, EC_PRIV)
        handles = await objects_by_label(app, src, ["app-key"])
        await app.logout(dst)
        with pytest.raises(Pkcs11Error) as caught:
            await relay_clone(app, src, dst, handles)
        assert caught.value.rv == CKR.USER_NOT_LOGGED_IN
        assert pair.target.store.token_objects("p1") == []


async def test_a_relay_that_alters_an_object_gets_nothing_stored(tmp_path: Path) -> None:
    """hsmclient's hops done by hand, one byte of the objects' answer flipped in transit."""
    async with two_hsms(tmp_path, same_domain=True) as pair:
        app, (src, dst) = pair.app, pair.sessions
        await app.generate_key_pair(src, Mechanism(CKM.EC_KEY_PAIR_GEN), EC_PUB, EC_PRIV)
        handles = tuple(await objects_by_label(app, src, ["app-key"]))
        serials = app.session_serial(src), app.session_serial(dst)
        await app.clone_call(dst, lambda rid, s: CloneOpen(rid, s, CloneRole.TARGET,
                                                           serials[0], ()))  # fmt: skip
        init = await app.clone_call(src, lambda rid, s: CloneOpen(rid, s, CloneRole.SOURCE,
                                                                  serials[1], handles))  # fmt: skip
        accept = await app.clone_call(dst, lambda rid, s: CloneFrame(rid, s, init))
        objects = bytearray(await app.clone_call(src, lambda rid, s: CloneFrame(rid, s, accept)))
        objects[20] ^= 0x01  # inside the first sealed object
        with pytest.raises(Pkcs11Error) as caught:
            await app.clone_call(dst, lambda rid, s: CloneFrame(rid, s, bytes(objects)))
        assert "failed authentication" in str(caught.value)
        assert pair.target.store.token_objects("p1") == []
        with pytest.raises(Pkcs11Error) as again:  # the clone is over on the target
            await app.clone_call(dst, lambda rid, s: CloneFrame(rid, s, bytes(objects)))
        assert again.value.rv == CKR.OPERATION_NOT_INITIALIZED


def _audit(rig: Rig) -> list[str]:
    return [str(record) for record in rig.hsm.state.audit.records()]


async def test_a_target_that_stores_nothing_says_why_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target's reason travels sealed in CLONE_RESULT, whose detail holds 256
    characters: the application gets it whole (it was clipped at 200 before)."""
    why = "partition 'p1' cannot take these objects: " + "w" * 160 + " (end of reason)"
    assert 200 < len("nothing stored: CKR_DEVICE_MEMORY: " + why) <= 256

    def refuse(self: CloneTarget, objects: object) -> int:
        raise Pkcs11Error(CKR.DEVICE_MEMORY, why)

    monkeypatch.setattr(CloneTarget, "store", refuse)
    async with two_hsms(tmp_path, same_domain=True) as pair:
        app, (src, dst) = pair.app, pair.sessions
        await app.generate_key_pair(src, Mechanism(CKM.EC_KEY_PAIR_GEN), EC_PUB, EC_PRIV)
        handles = await objects_by_label(app, src, ["app-key"])
        with pytest.raises(Pkcs11Error) as caught:
            await relay_clone(app, src, dst, handles)
        assert caught.value.rv == CKR.FUNCTION_FAILED
        assert "the target stored nothing: nothing stored: " in str(caught.value)
        assert why in str(caught.value)
        assert pair.target.store.token_objects("p1") == []
