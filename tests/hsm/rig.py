"""An engine with a fake PED and a manual clock, power-cyclable in-process."""

from __future__ import annotations

from pathlib import Path

from hsm.clock import ManualClock
from hsm.crypto import MasterKey
from hsm.engine import Hsm
from hsm.store import Store
from tests.hsm.fakeped import FakePed, FakeRouter

CHAL = b"application challenge"


class Rig:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.clock = ManualClock()
        self.ped = FakePed()
        self.router = FakeRouter(self.ped)
        self.notes: list[str] = []
        self.boot()

    def boot(self) -> None:
        self.store = Store(self.home)
        self.master = MasterKey.load_or_create(self.home)
        self.hsm = Hsm(self.home, self.store, self.master, self.clock, self.router, "150001")
        self.boot_notes = self.hsm.power_on()

    def power_cycle(self, off_for: float = 0.0) -> None:
        self.hsm.power_off()
        self.store.close()
        self.clock.advance(off_for)
        self.boot()

    def crash(self) -> None:
        """The process dies: no power_off, RAM gone."""
        self.store.close()
        self.boot()

    def notify(self, text: str) -> None:
        self.notes.append(text)

    async def init_hsm(self) -> None:
        await self.hsm.admin.init(self.notify, "test-hsm")
        await self.hsm.admin.login(self.notify)

    async def init_partition(self, name: str = "p1", *, with_cu: bool = False) -> None:
        if not self.hsm.state.initialised:
            await self.init_hsm()
        elif not self.hsm.state.so_logged_in:
            await self.hsm.admin.login(self.notify)
        self.hsm.partitions.create(name)
        self.ped.plan.extend([f"{name}-so", f"{name}-dom"])
        await self.hsm.partitions.init(self.notify, name)
        await self.hsm.roles.login(self.notify, name, "so", None)
        self.ped.plan.append(f"{name}-co")
        await self.hsm.roles.init(self.notify, name, "co", CHAL)
        if with_cu:
            await self.hsm.roles.login(self.notify, name, "co", None)
            self.ped.plan.append(f"{name}-cu")
            await self.hsm.roles.init(self.notify, name, "cu", CHAL + b"-cu")
