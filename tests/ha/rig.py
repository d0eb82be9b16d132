"""Three in-process pedhsm HSMs behind their client listeners, and an `HaBackend` over them.

Each HSM's listener runs in its own cancel scope: `Trio3.kill` cancels it (every
connection to it drops, as when its process dies) and `Trio3.revive` listens again on
the same port.  Partition p1 of the second and third HSM joins the first's cloning
domain (or not: *domains*), every Crypto Officer has the same challenge, activated with
auto-activation (policy 23; or not: *auto*).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from hsm.crypto import MasterKey
from hsm.engine import Hsm
from hsm.ntlsd import NtlsListener, ntls_identity
from hsm.store import Store
from hsmclient.ha.backend import HaBackend
from hsmclient.ha.control import ha_command
from hsmclient.slots import SlotMap
from ped.pkcs11.constants import CKA
from ped.pkcs11.token import Attribute, PartitionAccess
from ped.tls import PinStore, ensure_identity
from tests.cloning.test_clone_e2e import _activated_in_domain_of
from tests.hsm.rig import CHAL, Rig
from tests.hsm.test_clients_rig import CLIENT, activated

EC_PUB = [Attribute(CKA.TOKEN, True), Attribute(CKA.LABEL, b"ha-key"),
          Attribute(CKA.EC_PARAMS, bytes.fromhex("06082a8648ce3d030107")),
          Attribute(CKA.VERIFY, True)]  # fmt: skip
EC_PRIV = [Attribute(CKA.TOKEN, True), Attribute(CKA.LABEL, b"ha-key"),
           Attribute(CKA.PRIVATE, True), Attribute(CKA.SENSITIVE, True),
           Attribute(CKA.SIGN, True)]  # fmt: skip
NAMES = ("hsm1", "hsm2", "hsm3")


class SerialRig(Rig):
    """A `Rig` with its own HSM serial."""

    def __init__(self, home: Path, serial: str) -> None:
        self.serial = serial
        super().__init__(home)

    def boot(self) -> None:
        self.store = Store(self.home)
        self.master = MasterKey.load_or_create(self.home)
        self.hsm = Hsm(self.home, self.store, self.master, self.clock, self.router, self.serial)
        self.boot_notes = self.hsm.power_on()


@attrs.define
class Trio3:
    rigs: dict[str, SerialRig]
    backend: HaBackend
    nursery: trio.Nursery
    ports: dict[str, int] = attrs.Factory(dict)
    scopes: dict[str, trio.CancelScope] = attrs.Factory(dict)

    async def listen(self, name: str) -> int:
        rig = self.rigs[name]

        def access(client: str) -> PartitionAccess:
            return rig.hsm.client_access(client)

        listener = NtlsListener(rig.home, rig.hsm.serial, access, trio.Lock(),
                                port=self.ports.get(name, 0), host="127.0.0.1")  # fmt: skip
        scope = trio.CancelScope()
        self.scopes[name] = scope

        async def run(task_status: trio.TaskStatus[list[tuple[str, int]]]) -> None:
            with scope:
                await listener.run(task_status=task_status)

        bound = await self.nursery.start(run)
        self.ports[name] = int(bound[0][1])
        return self.ports[name]

    def kill(self, name: str) -> None:
        self.scopes[name].cancel()

    async def revive(self, name: str) -> None:
        await self.listen(name)

    def slot(self, name: str) -> int:
        return self.backend.slot_map.slot_for(name, _serial(self.rigs[name]))

    async def ha(self, action: str, **args: Any) -> dict[str, Any]:
        return await ha_command(self.backend, {"action": action, **args})

    def count(self, name: str) -> int:
        return len(self.rigs[name].store.token_objects("p1"))


def _serial(rig: Rig) -> str:
    part = rig.hsm.state.store.get_partition("p1")
    assert part is not None
    return str(part.serial)


async def auto_activation_on(rig: Rig, name: str = "p1") -> None:
    """Policy 23 on, then the Crypto Officer activated again (so its secret is sealed)."""
    await rig.hsm.roles.login(rig.notify, name, "so", None)
    rig.hsm.partitions.changepolicy(name, 23, 1)
    await rig.hsm.roles.activate(rig.notify, name, "co")
    rig.hsm.roles.logout(None)


@asynccontextmanager
async def three_hsms(tmp_path: Path, client_home: Path, *,
                     same_domain: tuple[bool, bool] = (True, True),
                     activate: tuple[bool, bool] = (True, True),
                     auto: tuple[bool, bool, bool] = (True, True, True),
                     ) -> AsyncIterator[Trio3]:  # fmt: skip
    rigs = {}
    for i, name in enumerate(NAMES):
        home = tmp_path / name
        home.mkdir(mode=0o700)
        rigs[name] = SerialRig(home, f"15000{i + 1}")
    first = rigs["hsm1"]
    await activated(first, "p1", auto=auto[0])
    for name, same, active, on in zip(NAMES[1:], same_domain, activate, auto[1:], strict=True):
        if same and active:
            await _activated_in_domain_of(rigs[name], first)
            if on:
                await auto_activation_on(rigs[name])
        else:
            await activated(rigs[name], "p1", activate=active, auto=on)
    client = ensure_identity(client_home, "app-host")
    pins = PinStore(client_home, program="hsmclient")
    try:
        async with trio.open_nursery() as nursery:
            backend = HaBackend(client_home, pins, SlotMap(client_home))
            trio3 = Trio3(rigs, backend, nursery)
            for name, rig in rigs.items():
                rig.hsm.clients.register(CLIENT, client.certificate_pem, None)
                rig.hsm.clients.assign(CLIENT, "p1")
                port = await trio3.listen(name)
                pins.register(name, ntls_identity(rig.home, rig.hsm.serial).certificate_pem,
                              ip="127.0.0.1", port=port)  # fmt: skip
            app = await backend.connect()
            await app.slots()  # every member slot gets its id
            await app.close()
            yield trio3
            await backend.aclose()
            nursery.cancel_scope.cancel()
    finally:
        for rig in rigs.values():
            rig.store.close()


CHALLENGE = CHAL.decode()
