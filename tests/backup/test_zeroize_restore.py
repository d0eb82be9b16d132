"""The issue's scenario: back up a partition of 100 keys, lose the HSM (three wrong HSM SO
logins zeroize it), initialise it again, join the same cloning domain by reading the red
key, restore: every key signs, and verifies as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from hsm.errors import LoginFailed, Zeroized
from hsmclient.commands_archive import backup, restore
from ped.pkcs11.constants import CKA, CKM
from ped.pkcs11.token import Attribute, Mechanism
from tests.backup.rig import join_domain, site
from tests.backup.test_archive_e2e import DIGEST, make_keys, signs
from tests.hsm.fakeped import FakeKey
from tests.hsm.rig import CHAL
from tests.hsm.test_clients_rig import CLIENT

KEYS = 100


async def test_a_zeroized_hsm_gets_its_100_keys_back_from_the_backup(tmp_path: Path) -> None:
    async with site(tmp_path) as s:
        app = s.app
        src, admin = await s.co_session("hsm1"), await s.admin()
        labels = await make_keys(s, src, KEYS)
        points, before = {}, {}
        for label in labels:
            (pub,) = await app.find_objects(src, [Attribute(CKA.LABEL, label.encode()),
                                                  Attribute(CKA.VERIFY, True)])  # fmt: skip
            points[label] = (await app.get_attributes(src, pub, [CKA.EC_POINT]))[0].value
            before[label] = await signs(s, src, label)
        s.backup.ped.keys["source-red"] = s.source.ped.keys["p1-dom"]
        s.backup.ped.plan.append("source-red")
        row = await backup(app, src, admin, "before-the-fire")
        assert row["objects"] == 2 * KEYS

        # Three wrong HSM SO logins: the source HSM zeroizes itself.
        rig = s.source
        rig.hsm.admin.logout()
        blue = rig.ped.keys["blue0"]
        rig.ped.keys["thief"] = FakeKey(blue.color, b"x" * 32, blue.keyset_id)
        for _ in range(2):
            rig.ped.plan.append("thief")
            with pytest.raises(LoginFailed):
                await rig.hsm.admin.login(rig.notify)
        rig.ped.plan.append("thief")
        with pytest.raises(Zeroized):
            await rig.hsm.admin.login(rig.notify)
        assert rig.store.token_objects("p1") == []

        # Initialised again; p1 joins the old domain by reading its red key on the PED.
        await rig.init_hsm()
        await join_domain(rig, rig)
        rig.hsm.clients.assign(CLIENT, "p1")
        slot = next(x.slot_id for x in await app.slots()
                    if x.token_present and x.description.startswith("hsm1 "))  # fmt: skip
        new = await app.open_session(slot, True)
        await app.login(new, 1, bytearray(CHAL))
        assert not await app.find_objects(new, [])
        await restore(app, admin, new, "before-the-fire")
        for label in labels:
            (pub,) = await app.find_objects(new, [Attribute(CKA.LABEL, label.encode()),
                                                  Attribute(CKA.VERIFY, True)])  # fmt: skip
            assert (await app.get_attributes(new, pub, [CKA.EC_POINT]))[0].value == points[label]
            await app.verify(new, Mechanism(CKM.ECDSA), pub, DIGEST, before[label])
            await app.verify(new, Mechanism(CKM.ECDSA), pub, DIGEST, await signs(s, new, label))
