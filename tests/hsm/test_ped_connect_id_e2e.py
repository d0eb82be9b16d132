"""``hsm ped connect -id N`` end to end: pedhsm asks pedclient for PED id N's pedserver,
connects through it to an emulated PED, and ``hsm ped show`` names the id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import pedclient.cli as pedclient_cli
from hsm.clock import TEST_CLOCK_ENV
from tests.hsm.emulated import Script
from tests.hsm.test_remote_e2e import Site

pytestmark = pytest.mark.process


@pytest.fixture
def site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    monkeypatch.delenv(TEST_CLOCK_ENV, raising=False)
    s = Site(tmp_path, capsys)
    yield s
    s.stop_all()


def test_connect_by_ped_id(site: Site) -> None:
    orange = site.blanks[0]
    local = Script()
    local.session().imprint(orange)  # hsm ped vector init on the cabled PED
    remote = Script(orange=orange)
    remote.session()  # hsm ped connect --id 1: the orange key, once
    site.start_all(local, remote)
    site.hsm_ok("hsm", "ped", "vector", "init")
    client = str(site.client_home)

    # no such id yet: the HSM says which ids there are and how to assign one
    code, _, err = site.hsm("hsm", "ped", "connect", "-id", "1")
    assert code == 1, err
    assert "PED id 1 is not defined (no PED ids are defined yet)" in err
    assert "`pedclient mode assignid --id 1 --ip ADDRESS --port 1503`" in err
    code, _, err = site.hsm("hsm", "ped", "connect", "--id", "1000")
    assert code == 2 and "a PED id is a whole number from 0 to 999" in err
    code, _, err = site.hsm("hsm", "ped", "connect", "--id", "1", "--port", "1600")
    assert code == 1 and "--port goes with --ip: PED id 1 has its own port" in err
    code, _, err = site.hsm("hsm", "ped", "connect", "--id", "1", "--ip", "127.0.0.1")
    assert code == 2 and "not allowed with argument" in err

    code, out, err = site.run(pedclient_cli.main, "-mode", "assignid", "-id", "1",
                              "-ip", "127.0.0.1", "-port", str(site.port), "-home", client)
    assert code == 0, (out, err)
    out = site.hsm_ok("hsm", "ped", "connect", "-id", "1")  # Luna spelling
    assert "PED operation required to connect to Remote PED - use orange PED Key(s)." in out
    assert f"PED: present this HSM's orange key(s) at 127.0.0.1:{site.port}" in out
    assert f"Remote PED connected (127.0.0.1:{site.port}, PED id 1)." in out
    shown = site.hsm_ok("hsm", "ped", "show")
    assert f"Remote PED:         127.0.0.1:{site.port} (PED id 1)" in shown, shown
    assert "Connected:          yes" in shown
    # the same id again, or its address: the working link stays, no orange key asked
    for again in (["--id", "1"], ["--ip", "127.0.0.1", "--port", str(site.port)]):
        out = site.hsm_ok("hsm", "ped", "connect", *again)
        assert "already connected" in out and "the link stays" in out, out
        assert "PED operation" not in out
    code, out, _ = site.run(pedclient_cli.main, "mode", "show", "--home", client)
    assert code == 0 and f"    PED id 1: 127.0.0.1:{site.port}" in out, out

    assert "Remote PED disconnected." in site.hsm_ok("hsm", "ped", "disconnect")
    shown = site.hsm_ok("hsm", "ped", "show")
    assert "PED id" not in shown and "Connected:          no" in shown
    events = [json.loads(line) for line in (site.hsm_home / "audit.log").read_text().splitlines()]
    assert any(e["event"] == "ped connected" and e.get("ped_id") == 1 for e in events), events

    # pedclient gone: the HSM says where it asked and what to do
    site.run(pedclient_cli.main, "mode", "stop", "--home", client)
    site.started = [s for s in site.started if s[1] != site.client_home]
    code, _, err = site.hsm("hsm", "ped", "connect", "--id", "1")
    assert code == 1
    assert (f"cannot look up PED id 1: pedclient does not answer on "
            f"{site.client_home / 'control.sock'}") in err, err
