"""The recovery loop of `HaBackend`: a retry count of 0 never brings a member back by
itself (seed 003); N gives N attempts per failure, one per poll interval; a new interval
applies at once.  The attempts themselves are recorded, not made (no HSM here)."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from hsmclient.ha import config as ha_config
from hsmclient.ha.backend import HaBackend
from hsmclient.ha.config import HaConfig, HaGroup, MemberRef
from hsmclient.slots import SlotMap
from ped.tls import PinStore

A, B = MemberRef("hsm1", "1001"), MemberRef("hsm2", "2001")


class Recorded(HaBackend):
    attempts: list[tuple[float, MemberRef]]

    async def bring_back(self, group: HaGroup, ref: MemberRef,
                         pin: bytearray | None = None) -> str:  # fmt: skip
        self.attempts.append((trio.current_time(), ref))
        return "still down"


def _backend(home: Path, retry: int, interval: int) -> Recorded:
    ha_config.save(home, HaConfig((HaGroup("ha1", "11001", (A, B), retry=retry),),
                                  interval=interval))  # fmt: skip
    backend = Recorded(home, PinStore(home, program="hsmclient"), SlotMap(home))
    backend.attempts = []
    backend.state("ha1").failed(B, "killed", now=1.0)
    return backend


async def test_retry_zero_never_tries_and_n_tries_n_times_one_per_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    zero = _backend(tmp_path / "zero", retry=0, interval=10)
    three = _backend(tmp_path / "three", retry=3, interval=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(zero.run_recovery)
        nursery.start_soon(three.run_recovery)
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert zero.attempts == []
    assert [ref for _, ref in three.attempts] == [B, B, B]
    assert [round(t) for t, _ in three.attempts] == [10, 20, 30]


async def test_a_new_interval_applies_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backend = _backend(tmp_path, retry=5, interval=600)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(backend.run_recovery)
        await trio.sleep(5)
        config = backend.config
        ha_config.save(tmp_path, HaConfig(config.groups, interval=1))
        backend.reload()  # what `hagroup interval` makes the daemon do
        await trio.sleep(2.5)
        nursery.cancel_scope.cancel()
    assert [round(t, 1) for t, _ in backend.attempts] == [6.0, 7.0]
