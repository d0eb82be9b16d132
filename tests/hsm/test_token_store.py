"""The client path's objects on disk: schema 2, the migration of a version-1 state.db,
and no key, secret or challenge in the clear in the database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hsm import store as store_mod
from hsm.errors import StateCorrupt
from hsm.store import DB_FILE, SCHEMA_VERSION, Store
from hsm.token.keygen import P256_OID
from hsm.token.vault import Vault
from ped.pkcs11.constants import CKA, CKM, CKR, CKU
from ped.pkcs11.token import Attribute, Mechanism, Pkcs11Error
from tests.hsm.rig import CHAL, Rig
from tests.hsm.test_clients_rig import CLIENT, logged_in


def _v1_home(tmp_path: Path) -> Path:
    """A state.db as a version-1 pedhsm left it, with a partition in it."""
    home = tmp_path / "v1"
    home.mkdir()
    db = sqlite3.connect(home / DB_FILE, isolation_level=None)
    db.executescript(store_mod._SCHEMA)  # version 1's tables, unchanged
    db.execute("INSERT INTO meta(k, v) VALUES('schema_version', '1')")
    db.execute("INSERT INTO partitions(name, serial) VALUES('old', '15000100001')")
    db.close()
    return home


def _tables(home: Path) -> set[str]:
    db = sqlite3.connect(home / DB_FILE)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()


def test_a_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    home = _v1_home(tmp_path)
    s = Store(home)
    try:
        assert SCHEMA_VERSION == 3
        assert s.get_meta("schema_version") == "3"
        part = s.get_partition("old")
        assert part is not None and part.serial == "15000100001"
        assert s.token_objects("old") == [] and s.assigned_partitions("x") == []
    finally:
        s.close()
    assert {"token_objects", "clients", "client_partitions", "backup_partitions"} <= _tables(home)
    Store(home).close()  # and opens again as version 3


def test_an_interrupted_migration_leaves_version_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _v1_home(tmp_path)
    monkeypatch.setattr(store_mod, "_SCHEMA_V2", (*store_mod._SCHEMA_V2, "NOT SQL AT ALL"))
    with pytest.raises(sqlite3.Error):
        Store(home)
    db = sqlite3.connect(home / DB_FILE)
    assert db.execute("SELECT v FROM meta WHERE k='schema_version'").fetchone() == ("1",)
    db.close()
    assert "token_objects" not in _tables(home)
    monkeypatch.undo()
    Store(home).close()
    assert "token_objects" in _tables(home)


def test_a_newer_version_is_refused(tmp_path: Path) -> None:
    home = _v1_home(tmp_path)
    db = sqlite3.connect(home / DB_FILE, isolation_level=None)
    db.execute("UPDATE meta SET v='4' WHERE k='schema_version'")
    db.close()
    with pytest.raises(StateCorrupt, match="schema version 4"):
        Store(home)


async def test_no_key_value_or_challenge_in_the_clear_on_disk(rig: Rig) -> None:
    access, s = await logged_in(rig)
    aes = await access.generate_key(
        s, Mechanism(CKM.AES_KEY_GEN), [Attribute(CKA.TOKEN, True), Attribute(CKA.LABEL, b"k")]
    )
    pub, priv = await access.generate_key_pair(
        s, Mechanism(CKM.EC_KEY_PAIR_GEN),
        [Attribute(CKA.TOKEN, True), Attribute(CKA.EC_PARAMS, P256_OID)],
        [Attribute(CKA.TOKEN, True)],
    )  # fmt: skip
    data_key = access._logged["p1"][1]  # type: ignore[attr-defined]  # the test's look inside
    vault = Vault(rig.hsm.state, "p1", access._objects)  # type: ignore[attr-defined]
    secrets_ = [bytes(vault.key_value(h, data_key)) for h in (aes, priv)]
    assert [len(v) for v in secrets_] == [32, 32]
    rig.store.checkpoint()
    on_disk = b"".join(p.read_bytes() for p in rig.home.iterdir() if p.is_file())
    for value in [*secrets_, bytes(data_key), CHAL]:
        assert value not in on_disk
    (point,) = await access.get_attributes(s, pub, [CKA.EC_POINT])
    assert isinstance(point.value, bytes) and point.value.hex().encode() in on_disk  # public


async def test_an_altered_attribute_makes_the_key_unusable(rig: Rig) -> None:
    access, s = await logged_in(rig)
    _, priv = await access.generate_key_pair(
        s, Mechanism(CKM.EC_KEY_PAIR_GEN),
        [Attribute(CKA.TOKEN, True), Attribute(CKA.EC_PARAMS, P256_OID)],
        [Attribute(CKA.TOKEN, True), Attribute(CKA.SIGN, False)],
    )  # fmt: skip
    # someone with the file turns CKA_SIGN on
    db = sqlite3.connect(rig.home / DB_FILE, isolation_level=None)
    (text,) = db.execute("SELECT attributes FROM token_objects WHERE handle=?", (priv,)).fetchone()
    sign = f"[{int(CKA.SIGN)},false]"
    assert sign in text
    db.execute("UPDATE token_objects SET attributes=? WHERE handle=?",
               (text.replace(sign, f"[{int(CKA.SIGN)},true]"), priv))  # fmt: skip
    db.close()
    with pytest.raises(Pkcs11Error) as refused:
        await access.sign(s, Mechanism(CKM.ECDSA), priv, bytes(32))
    assert refused.value.rv == CKR.GENERAL_ERROR and "altered" in str(refused.value)


async def test_token_objects_survive_a_power_cycle_and_go_with_the_partition(rig: Rig) -> None:
    access, s = await logged_in(rig)
    key = await access.generate_key(s, Mechanism(CKM.AES_KEY_GEN), [Attribute(CKA.TOKEN, True)])
    await access.close()
    rig.power_cycle()
    # activation is gone with the power: activate again (policy 22), log in again
    await rig.hsm.admin.login(rig.notify)
    await rig.hsm.roles.activate(rig.notify, "p1", "co")
    again = rig.hsm.client_access(CLIENT)
    s2 = await again.open_session(again.partitions()[0].serial, True)
    await again.login(s2, CKU.USER, bytearray(CHAL))
    assert await again.find_objects(s2, []) == [key]
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    await rig.hsm.partitions.init(rig.notify, "p1", True)
    assert rig.hsm.state.store.token_objects("p1") == []
