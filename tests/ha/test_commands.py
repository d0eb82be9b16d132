"""``hsmclient hagroup``'s command line: LunaCM's spellings through the running daemon,
and the configuration-only actions without one."""

from __future__ import annotations

import io
import json
from pathlib import Path

import trio

from hsmclient.cli import main
from hsmclient.daemon import HsmClient
from hsmclient.ha.control import resolve_member
from hsmclient.settings import Layout, Settings
from ped.daemon.exits import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_OK
from tests.ha.rig import CHALLENGE, three_hsms
from tests.hsmclient.test_daemon import P11KIT
from tests.pedserver.fakes import short_tmp


async def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await trio.to_thread.run_sync(lambda: main(list(argv), out=out, err=err))
    return code, out.getvalue(), err.getvalue()


async def test_luna_spellings_through_the_daemon(tmp_path: Path) -> None:
    with short_tmp() as home:
        async with three_hsms(tmp_path, home) as t:
            layout = Layout(home)
            client = HsmClient(Settings(), home=home, endpoint_path=layout.endpoint,
                               backend=t.backend, control_path=layout.control,
                               p11kit=P11KIT)  # fmt: skip
            await t.nursery.start(client.serve)
            h = ("--home", str(home))
            code, out, err = await _cli("hagroup", "createGroup", "-label", "ha1", "-slot",
                                        str(t.slot("hsm1")), "-password", CHALLENGE, *h)
            assert code == EXIT_OK and out.startswith("HA group ha1 created: virtual slot"), err
            serial = resolve_member(t.backend.slot_map, {"slot": t.slot("hsm2")}).serial
            code, out, err = await _cli("hagroup", "addMember", "-group", "ha1",
                                        "-serialnumber", serial, "-password", CHALLENGE, *h)
            assert code == EXIT_OK and "added to HA group ha1" in out, err
            code, out, err = await _cli("hagroup", "retry", "-group", "ha1", "-count", "2", *h)
            assert code == EXIT_OK and "automatic recovery on: 2 attempts" in out
            code, out, _ = await _cli("hagroup", "listGroups", *h)
            assert "HA Group Label:  ha1" in out and "Maximum Retry:   2" in out
            assert out.count(" alive ") == 2 and CHALLENGE not in out
            code, out, _ = await _cli("hagroup", "listgroups", "--json", *h)
            listed = json.loads(out)
            assert [m["state"] for m in listed["groups"][0]["members"]] == ["alive"] * 2
            code, _, err = await _cli("hagroup", "createGroup", "-label", "ha2", "-slot",
                                      str(t.slot("hsm2")), "-password", CHALLENGE, *h)
            assert code == EXIT_ERROR and "is a member of HA group ha1 already" in err
            client.request_stop("test")


async def test_without_a_daemon_only_the_configuration_is_changed(tmp_path: Path) -> None:
    with short_tmp() as home:
        h = ("--home", str(home))
        code, out, _ = await _cli("hagroup", "listgroups", *h)
        assert code == EXIT_OK and out.startswith("No HA group; make one with:")
        code, _, err = await _cli("hagroup", "retry", "--group", "ha1", "--count", "1", *h)
        assert code == EXIT_ERROR and "no HA group 'ha1'" in err
        code, _, err = await _cli("hagroup", "creategroup", "--label", "ha1", "--slot", "0",
                                  "--password", "x", *h)  # fmt: skip
        assert code == EXIT_NOT_RUNNING and "hsmclient is not running" in err
        code, out, _ = await _cli("hagroup", "interval", "--interval", "5", *h)
        assert code == EXIT_OK and out == "HA recovery poll interval: 5 s\n"
        assert json.loads((home / "hagroups.json").read_text())["interval"] == 5
