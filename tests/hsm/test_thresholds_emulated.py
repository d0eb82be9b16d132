"""The rest of the failed-login table against the emulated PED (script operator).

A "stranger" key is a key of the right colour from another keyset: the PED reports a
keyset mismatch, which the HSM counts (a wrong key of the right colour).
"""

from __future__ import annotations

import pytest

from hsm.errors import LockedOut, LoginFailed, Zeroized
from hsm.store import HSM_SCOPE
from keys.colors import Color
from tests.hsm.emulated import Bench, Script

CHAL = b"application challenge"


async def _hsm_with_partition(bench: Bench, s: Script) -> None:
    b = bench.blanks
    s.session().imprint(b[0]).imprint(b[1])  # hsm init
    s.session().read(Color.BLUE, b[0])  # hsm login
    s.session().imprint(b[2]).imprint(b[3])  # partition init
    s.session().read(Color.BLUE, b[2])  # role login so
    s.session().imprint(b[4])  # role init co


async def _run_setup(bench: Bench, *, policy15: bool) -> None:
    h, n = bench.hsm, bench.notify
    if policy15:
        with h.state.store.tx():
            h.state.store.set_meta("policy.15", "1")  # as left by `hsm changepolicy` (tested apart)
    await h.admin.init(n, "emulated")
    await h.admin.login(n)
    h.partitions.create("p1")
    await h.partitions.init(n, "p1")
    await h.roles.login(n, "p1", "so", None)
    await h.roles.init(n, "p1", "co", CHAL)


async def test_partition_so_ten_wrong_keys_zeroize_the_partition(bench: Bench) -> None:
    s = Script()
    await _hsm_with_partition(bench, s)
    s.session().read(Color.BLACK, bench.blanks[4])  # role login co, to store an object
    for _ in range(10):
        s.session().read(Color.BLUE, bench.extra["stranger-blue"])
    operator = bench.run_script(s)
    await _run_setup(bench, policy15=False)
    h, n = bench.hsm, bench.notify
    await h.roles.login(n, "p1", "co", None)
    h.objects.create("p1", "k1", b"value")
    for i in range(1, 10):
        with pytest.raises(LoginFailed, match=f"{i} consecutive failure"):
            await h.roles.login(n, "p1", "so", None)
    with pytest.raises(Zeroized, match="partition 'p1' has been zeroized"):
        await h.roles.login(n, "p1", "so", None)
    shown = h.partitions.show("p1")
    assert not shown["initialised"] and shown["objects"] == 0
    assert h.state.initialised
    await operator.done.wait()


async def test_auditor_ten_wrong_keys_lock_for_ten_minutes(bench: Bench) -> None:
    b = bench.blanks
    s = Script()
    s.session().imprint(b[0]).imprint(b[1])  # hsm init
    s.session().imprint(b[2])  # audit init (white)
    for _ in range(10):
        s.session().read(Color.WHITE, bench.extra["stranger-white"])
    s.session().read(Color.WHITE, b[2])  # after ten minutes, the right key
    operator = bench.run_script(s)
    h, n = bench.hsm, bench.notify
    await h.admin.init(n, "emulated")
    await h.auditor.init(n, force=False)
    for _ in range(9):
        with pytest.raises(LoginFailed):
            await h.auditor.login(n)
    with pytest.raises(LockedOut, match="10 minutes"):
        await h.auditor.login(n)
    bench.clock.advance(300)
    with pytest.raises(LockedOut, match="unlocks by itself in 300 s"):
        await h.auditor.login(n)  # refused before the PED is asked
    bench.clock.advance(300)
    await h.auditor.login(n)
    assert h.state.store.get_role(HSM_SCOPE, "auditor").failures == 0
    await operator.done.wait()


async def test_co_policy15_on_locks_co_and_cu_until_the_partition_so_resets(
    bench: Bench,
) -> None:
    b = bench.blanks
    s = Script()
    await _hsm_with_partition(bench, s)
    s.session().read(Color.BLACK, b[4])  # role login co
    s.session().imprint(b[5])  # role init cu (gray)
    for _ in range(10):
        s.session().read(Color.BLACK, bench.extra["stranger-black"])
    s.session().read(Color.BLUE, b[2])  # role login so
    s.session().imprint(b[6])  # role resetpw co: a new black key
    s.session().read(Color.BLACK, b[6])  # role login co with it
    operator = bench.run_script(s)
    await _run_setup(bench, policy15=True)
    h, n = bench.hsm, bench.notify
    await h.roles.login(n, "p1", "co", None)
    h.objects.create("p1", "k1", b"kept across the reset")
    await h.roles.init(n, "p1", "cu", b"cu challenge")
    for _ in range(9):
        with pytest.raises(LoginFailed):
            await h.roles.login(n, "p1", "co", None)
    with pytest.raises(LockedOut, match="resetpw"):
        await h.roles.login(n, "p1", "co", None)
    with pytest.raises(LockedOut, match="resetpw"):
        await h.roles.login(n, "p1", "cu", b"cu challenge")
    await h.roles.login(n, "p1", "so", None)
    await h.roles.resetpw(n, "p1", "co", b"new challenge")
    await h.roles.login(n, "p1", "co", None)
    assert [o["label"] for o in h.objects.list_objects("p1")] == ["k1"]
    await operator.done.wait()
