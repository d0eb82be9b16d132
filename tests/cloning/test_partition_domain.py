"""`partition init --domain-from-red-key`: a partition joins the domain of a red key set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from hsm.control import BY_NAME
from hsm.errors import NotInitialised
from hsm.pedport import WrongKeyColor
from hsm.shellparser import build_parser
from keys.colors import Color
from ped.cloning import (
    CloneDirection,
    CloneInitiator,
    CloneResponder,
    DomainMismatch,
    derive_clone_psk,
)
from tests.hsm.emulated import Bench, Script
from tests.hsm.rig import Rig


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    return Rig(home)


async def _init(rig: Rig, name: str, red: str, *, read: bool) -> str:
    rig.hsm.partitions.create(name)
    rig.ped.plan.extend([f"{name}-so", red])
    return await rig.hsm.partitions.init(rig.notify, name, domain_from_red_key=read)


def _handshake(source: bytes | bytearray, target: bytes | bytearray) -> None:
    initiator = CloneInitiator(
        domain=source, direction=CloneDirection.INITIATOR_SENDS,
        source_serial="150001001", target_serial="150001002",
    )
    responder = CloneResponder()
    responder.receive_init(initiator.start())
    accept, _ = responder.accept(target)
    initiator.receive(accept)


async def test_partitions_of_one_red_key_set_share_the_cloning_channel_key(rig: Rig) -> None:
    await rig.init_hsm()
    await _init(rig, "p1", "red-a", read=False)  # imprints a new red key set
    reads = rig.ped.reads
    said = await _init(rig, "p2", "red-a", read=True)  # reads it back
    assert rig.ped.reads == reads + 1
    assert "domain fingerprint" in said
    await _init(rig, "p3", "red-c", read=False)  # a new domain
    rig.power_cycle()  # the domain is kept sealed across power cycles

    d1, d2, d3 = (rig.hsm.partitions.cloning_domain(p) for p in ("p1", "p2", "p3"))
    assert d1 == d2 != d3
    assert derive_clone_psk(d1) == derive_clone_psk(d2) != derive_clone_psk(d3)
    _handshake(d1, d2)
    with pytest.raises(DomainMismatch):
        _handshake(d1, d3)


async def test_a_red_key_with_a_wrong_pin_is_another_domain(rig: Rig) -> None:
    await rig.init_hsm()
    await _init(rig, "p1", "red-a", read=False)
    await _init(rig, "p2", ("pin", "red-a"), read=True)
    with pytest.raises(DomainMismatch):
        _handshake(rig.hsm.partitions.cloning_domain("p1"),
                   rig.hsm.partitions.cloning_domain("p2"))


async def test_a_key_of_another_colour_is_refused_and_nothing_is_initialised(rig: Rig) -> None:
    await rig.init_hsm()
    await _init(rig, "p1", "red-a", read=False)
    with pytest.raises(WrongKeyColor):
        await _init(rig, "p2", "p1-so", read=True)  # a blue key where the red one is due
    assert rig.hsm.partitions.show("p2")["initialised"] is False
    assert rig.hsm.state.store.get_role("p2", "domain") is None


def test_the_shell_names_the_option_and_the_daemon_receives_it() -> None:
    ns = build_parser().parse_args(["partition", "init", "--name", "p2", "--domain-from-red-key"])
    assert ns.domain_from_red_key is True
    # The control table hands it to `PartitionCommands.init` (it was once dropped there).
    row = BY_NAME["partition.init"]
    values = [parse({"name": "p2", "domain_from_red_key": True}) for parse in row.args]
    assert values == ["p2", False, True]


@pytest.fixture
async def bench(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Bench]:
    b = Bench(tmp_path, nursery)
    yield b
    b.store.close()


async def test_the_emulated_ped_reads_the_red_key_with_its_pin(bench: Bench) -> None:
    b = bench.blanks
    s = Script()
    s.session().imprint(b[0]).imprint(b[1])  # hsm init
    s.session().read(Color.BLUE, b[0])  # hsm login
    s.session().imprint(b[2]).imprint(b[3], pin="1234")  # p1: SO, a new red key with a PIN
    s.session().imprint(b[4]).read(Color.RED, b[3], pin="1234")  # p2 joins p1's domain
    s.session().imprint(b[5]).imprint(b[6])  # p3: a new domain
    operator = bench.run_script(s)
    h, n = bench.hsm, bench.notify
    await h.admin.init(n, "emulated")
    await h.admin.login(n)
    for name in ("p1", "p2", "p3"):
        h.partitions.create(name)
    await h.partitions.init(n, "p1")
    await h.partitions.init(n, "p2", domain_from_red_key=True)
    await h.partitions.init(n, "p3")
    with trio.fail_after(30):
        await operator.done.wait()
    d1, d2, d3 = (h.partitions.cloning_domain(p) for p in ("p1", "p2", "p3"))
    assert derive_clone_psk(d1) == derive_clone_psk(d2) != derive_clone_psk(d3)
    _handshake(d1, d2)
    with pytest.raises(DomainMismatch):
        _handshake(d2, d3)


async def test_a_domain_sealed_the_old_way_gets_a_clear_error(rig: Rig) -> None:
    """A partition initialised before domains were sealed under the device key (its row
    holds a key wrapped under the red key) is told how to move on, not "secret does not
    open this key"."""
    await rig.init_hsm()
    await _init(rig, "p1", "red-a", read=False)
    st = rig.hsm.state
    row = st.store.get_role("p1", "domain")
    assert row is not None
    with st.store.tx():  # what an older pedhsm stored: not sealed under the device key
        st.store.put_role("p1", "domain", row.keyset_id, b"\x01" * 60)
    with pytest.raises(NotInitialised) as old:
        rig.hsm.partitions.cloning_domain("p1")
    assert "before cloning domains could be shared" in str(old.value)
    assert "partition init --name p1 --force" in str(old.value)
