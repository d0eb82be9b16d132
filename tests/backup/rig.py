"""Three in-process HSMs behind their client listeners (port 0): a source (hsm1), a
target (hsm2, its own domain unless told) and a Backup HSM (hsm3), one hsmclient
`RemoteApplication` in front of them all."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from hsm.access import ClientAccess
from hsm.backup import mark_backup_hsm
from hsm.backup_access import BackupAccess
from hsm.crypto import MasterKey
from hsm.engine import Hsm
from hsm.ntlsd import NtlsListener, ntls_identity
from hsm.store import Store
from hsmclient.remote import RemoteApplication, RemoteBackend
from hsmclient.slots import SlotMap
from ped.pkcs11.constants import CKU
from ped.pkcs11.token import PartitionAccess
from ped.tls import PinStore, ensure_identity
from tests.hsm.rig import CHAL, Rig
from tests.hsm.test_clients_rig import CLIENT, activated


class SerialRig(Rig):
    """A rig with its own HSM serial (and, with *backup*, a Backup HSM)."""

    def __init__(self, home: Path, serial: str, *, backup: bool = False) -> None:
        self.serial, self.backup = serial, backup
        super().__init__(home)

    def boot(self) -> None:
        self.store = Store(self.home)
        if self.backup:
            mark_backup_hsm(self.store)
        self.master = MasterKey.load_or_create(self.home)
        self.hsm = Hsm(self.home, self.store, self.master, self.clock, self.router, self.serial)
        self.boot_notes = self.hsm.power_on()


async def join_domain(rig: Rig, source: Rig, name: str = "p1") -> None:
    """Partition *name* of *rig* reads *source*'s red key set (same domain), CO activated."""
    if not rig.hsm.state.initialised:
        await rig.init_hsm()
    rig.hsm.partitions.create(name)
    rig.ped.keys["source-red"] = source.ped.keys["p1-dom"]
    rig.ped.plan.extend([f"{name}-so", "source-red"])
    await rig.hsm.partitions.init(rig.notify, name, domain_from_red_key=True)
    await rig.hsm.roles.login(rig.notify, name, "so", None)
    rig.ped.plan.append(f"{name}-co")
    await rig.hsm.roles.init(rig.notify, name, "co", CHAL)
    rig.hsm.partitions.changepolicy(name, 22, 1)
    await rig.hsm.roles.activate(rig.notify, name, "co")
    rig.hsm.roles.logout(None)


@attrs.define
class Site:
    source: SerialRig
    target: SerialRig
    backup: SerialRig
    app: RemoteApplication
    accesses: dict[str, list[ClientAccess]]

    async def slot(self, server: str, label: str) -> int:
        for s in await self.app.slots():
            if s.description.startswith(f"{server} ") and label in s.description:
                return s.slot_id
        raise AssertionError(f"no slot {label!r} on {server}")

    async def co_session(self, server: str, label: str = "p1") -> int:
        session = await self.app.open_session(await self.slot(server, label), True)
        await self.app.login(session, CKU.USER, bytearray(CHAL))
        return session

    async def admin(self) -> int:
        return await self.app.open_session(await self.slot("hsm3", "backup HSM"), True)


def register(rig: Rig, pem: bytes, *partitions: str) -> None:
    rig.hsm.clients.register(CLIENT, pem, None)
    for name in partitions:
        rig.hsm.clients.assign(CLIENT, name)


@asynccontextmanager
async def site(tmp_path: Path, *, target_same_domain: bool = True,
               client_home: Path | None = None) -> AsyncIterator[Site]:
    homes = {name: tmp_path / name for name in ("hsm1", "hsm2", "hsm3")}
    for home in homes.values():
        home.mkdir(mode=0o700)
    source = SerialRig(homes["hsm1"], "150001")
    target = SerialRig(homes["hsm2"], "150002")
    backup = SerialRig(homes["hsm3"], "150003", backup=True)
    await activated(source, "p1")
    if target_same_domain:
        await join_domain(target, source)
    else:
        await activated(target, "p1")
    await backup.init_hsm()  # its SO stays logged in
    client_home = client_home or tmp_path / "client"
    client = ensure_identity(client_home, "app-host")
    pins = PinStore(client_home, program="hsmclient")
    accesses: dict[str, list[ClientAccess]] = {"hsm1": [], "hsm2": [], "hsm3": []}

    def factory(rig: SerialRig, name: str) -> Callable[[str], PartitionAccess]:
        def make(client_name: str) -> PartitionAccess:
            st, logins = rig.hsm.state, rig.hsm.logins
            access = (BackupAccess(st, logins, client_name) if rig.backup
                      else rig.hsm.client_access(client_name))  # fmt: skip
            assert isinstance(access, ClientAccess)
            accesses[name].append(access)
            return access

        return make

    rigs = {"hsm1": source, "hsm2": target, "hsm3": backup}
    try:
        async with trio.open_nursery() as nursery:
            for name, rig in rigs.items():
                register(rig, client.certificate_pem, *([] if rig.backup else ["p1"]))
                listener = NtlsListener(rig.home, rig.hsm.serial, factory(rig, name),
                                        trio.Lock(), port=0, host="127.0.0.1")  # fmt: skip
                bound = await nursery.start(listener.run)
                pins.register(name, ntls_identity(rig.home, rig.hsm.serial).certificate_pem,
                              ip="127.0.0.1", port=bound[0][1])  # fmt: skip
            backend = RemoteBackend(client_home, pins, SlotMap(client_home))
            app = await backend.connect()
            yield Site(source, target, backup, app, accesses)
            await backend.aclose()
            nursery.cancel_scope.cancel()
    finally:
        for rig in rigs.values():
            rig.store.close()
