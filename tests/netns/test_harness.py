"""Self-test of the namespace harness: two hosts talk; the firewall on B stops B dialling
out but not A dialling in; teardown leaves nothing behind."""

from __future__ import annotations

import subprocess

import pytest

from tests.netns.harness import TwoHosts, make_two_hosts, require_netns

pytestmark = pytest.mark.netns

PORT = 9697


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_firewalled_host_can_be_dialled_but_cannot_dial_out(two_hosts: TwoHosts) -> None:
    a, b = two_hosts.a, two_hosts.b
    assert a.netns in _namespaces() and b.netns in _namespaces()
    assert b.ip in b.run("ip", "-4", "addr", "show", "dev", b.ifname).stdout

    a.listen(PORT)
    b.listen(PORT)
    assert a.can_connect(b.ip, PORT)  # A -> B works
    assert b.can_connect(a.ip, PORT)  # B -> A works before the firewall

    b.block_new_outgoing()
    assert not b.can_connect(a.ip, PORT, timeout=2.0)  # B can no longer dial A...
    assert b.firewall_drops() > 0  # ...because the firewall dropped it, not by chance
    assert a.can_connect(b.ip, PORT)  # ...but A can still dial B
    assert b.can_connect(b.ip, PORT)  # and B still talks to itself


def test_teardown_removes_everything_even_on_failure() -> None:
    require_netns()
    names: list[str] = []
    with pytest.raises(RuntimeError, match="boom"), make_two_hosts() as pair:
        names = [h.netns for h in pair.hosts]
        proc = pair.b.listen(PORT)
        pair.b.block_new_outgoing()
        raise RuntimeError("boom")
    assert names and not set(names) & _namespaces()
    assert proc.poll() is not None  # the listener we started was stopped
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert pair.a.ifname not in links and pair.b.ifname not in links


def test_run_ids_are_unique() -> None:
    require_netns()
    with make_two_hosts() as one, make_two_hosts() as two:
        assert one.run_id != two.run_id
        assert not {h.netns for h in one.hosts} & {h.netns for h in two.hosts}
        assert one.a.can_connect(one.b.ip, 1, timeout=1.0) is False  # nothing listens


def test_skips_with_reason_or_fails_when_required(monkeypatch) -> None:
    from tests.netns import harness

    monkeypatch.setattr(harness, "netns_unavailable", lambda: "`nft` not found (install it)")
    monkeypatch.delenv("PED_REQUIRE_NETNS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="`nft` not found"):
        harness.require_netns()
    monkeypatch.setenv("PED_REQUIRE_NETNS", "1")
    with pytest.raises(pytest.fail.Exception, match="PED_REQUIRE_NETNS=1 but `nft` not found"):
        harness.require_netns()
    monkeypatch.setattr(harness, "netns_unavailable", lambda: None)
    harness.require_netns()  # available: neither skips nor fails


def test_namespaces_of_a_dead_run_are_removed() -> None:
    from tests.netns.harness import _run, remove_stale_namespaces

    require_netns()
    # A pid that cannot be alive (above the kernel's pid_max) stands in for a killed run.
    stale = "ped-999999999-abcdef-a"
    _run(["ip", "netns", "add", stale])
    try:
        assert stale in remove_stale_namespaces()
        assert stale not in _namespaces()
    finally:
        _run(["ip", "netns", "del", stale], check=False)
