"""An HA group with real processes: three pedhsm HSMs, hsmclient, and an application
(PyKCS11 through Debian's p11-kit-client.so, its own process) signing in a loop while
pedhsm processes are killed with SIGKILL and started again (`pedtools.bench.ha_site`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from pedtools.bench.ha_client import Signer
from pedtools.bench.ha_site import GROUP, P11KIT_CLIENT, HaSite
from pedtools.testing import Site
from tests.hsmclient.conftest import require_p11_tools

pytestmark = pytest.mark.process

#: Signatures to see between two events of the test (each is a few milliseconds).
BETWEEN = 60


@pytest.fixture
def ha() -> Iterator[HaSite]:
    require_p11_tools()  # or a failure saying what to install (never a skip)
    site = Site(prefix="ha-")
    try:
        ha = HaSite(site)
        ha.up()
        ha.register()
        yield ha
    finally:
        site.close()


def _members(ha: HaSite) -> dict[str, dict[str, object]]:
    listed = json.loads(ha.must(ha.hsmclient("hagroup", "listgroups", "--json")))
    [group] = listed["groups"]
    return {m["server"]: m for m in group["members"]}


def _objects(ha: HaSite, name: str) -> list[str]:
    """The labels of the member's objects, as pkcs11-tool lists them on its own slot."""
    done = ha.site.run("pkcs11-tool", "--module", str(P11KIT_CLIENT), "--slot",
                       str(ha.slots[name]), "--login", "--pin", ha.challenge,
                       "--list-objects", env=ha.app_env())  # fmt: skip
    assert done.code == 0, done.output
    return sorted(line.split(":", 1)[1].strip() for line in done.out.splitlines()
                  if line.strip().startswith("label:"))  # fmt: skip


def _wait_in_use(ha: HaSite, signer: Signer, names: set[str]) -> None:
    """Sign on until listgroups shows *names* alive and synced (recovery is an event)."""
    deadline = time.monotonic() + 60
    while True:
        members = _members(ha)
        if all(members[n]["state"] == "alive" and not members[n]["needs_sync"]
               for n in names):  # fmt: skip
            return
        assert time.monotonic() < deadline, members
        signer.until(BETWEEN)


def test_signing_survives_two_kills_and_members_come_back_by_recover_or_retry(
    ha: HaSite,
) -> None:
    ha.group()
    assert "HA group: 3 of 3 members in use" in ha.must(ha.hsmclient("slot", "list"))
    job = {"module": str(P11KIT_CLIENT), "group": GROUP, "label": "ha-key", "generate": True,
           "challenge_file": str(ha.challenge_file)}  # fmt: skip
    signer = Signer(job, ha.app_env(), ha.site.root)
    try:
        signer.send("go")
        signer.until(BETWEEN)
        for name in ("hsm2", "hsm1"):  # one, then a second: the third carries on alone
            ha.kill(name)
            signer.until(BETWEEN)
        members = _members(ha)
        assert members["hsm1"]["state"] == members["hsm2"]["state"] == "down", members
        assert members["hsm1"]["why"] and members["hsm1"]["since"]
        # a key made while two members are down lives on the third only, for now
        made = ha.site.run("pkcs11-tool", "--module", str(P11KIT_CLIENT), "--slot",
                           str(ha.group_slot), "--login", "--pin", ha.challenge,
                           "--keypairgen", "--key-type", "EC:prime256v1", "--label",
                           "made-meanwhile", env=ha.app_env())  # fmt: skip
        assert made.code == 0, made.output

        # retry 0 (the default): members started again stay out until `hagroup recover`
        ha.start_hsm("hsm1")
        ha.start_hsm("hsm2")
        signer.until(BETWEEN * 2)
        members = _members(ha)
        assert members["hsm1"]["state"] == members["hsm2"]["state"] == "down", members
        said = ha.must(ha.hsmclient("hagroup", "recover", "--group", GROUP))
        assert "back in use" in said, said
        _wait_in_use(ha, signer, {"hsm1", "hsm2", "hsm3"})

        # with a retry count, a member that comes back is recovered by itself
        ha.must(ha.hsmclient("hagroup", "interval", "--interval", "1"))
        ha.must(ha.hsmclient("hagroup", "retry", "--group", GROUP, "--count", "5"))
        ha.kill("hsm3")
        signer.until(BETWEEN)
        assert _members(ha)["hsm3"]["state"] == "down"
        ha.start_hsm("hsm3")
        _wait_in_use(ha, signer, {"hsm3"})
        signer.until(BETWEEN)
    finally:
        summary = signer.stop()
    assert summary["failed"] == 0, summary["errors"]
    assert summary["ok"] > BETWEEN * 8
    expected = sorted(["ha-key", "ha-key", "made-meanwhile", "made-meanwhile"])
    for name in ha.names:
        assert _objects(ha, name) == expected, name
    listed = ha.must(ha.hsmclient("hagroup", "listgroups"))
    assert "Auto Recovery:   on" in listed and "Maximum Retry:   5" in listed, listed
    # hsmclient held the challenge through two kills and three recoveries: no log, no
    # state file of any daemon on the site carries it
    secret = ha.challenge.encode()
    scanned = [path for path in ha.site.root.rglob("*")
               if path.is_file() and path != ha.challenge_file
               and path.suffix in (".log", ".json", ".txt", ".jsonl")]
    assert any(path.name == "hsmclient.log" for path in scanned), scanned
    for path in scanned:
        assert secret not in path.read_bytes(), path
