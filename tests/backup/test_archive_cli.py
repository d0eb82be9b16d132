"""``hsmclient partition archive`` through the running daemon: the command line's words
(LunaCM's spellings too), what it prints, its exit codes; three pedhsm HSMs in process."""

from __future__ import annotations

import io
import json
from pathlib import Path

import trio

from hsmclient.cli import main
from hsmclient.daemon import HsmClient
from hsmclient.remote import RemoteBackend
from hsmclient.settings import Layout, Settings
from hsmclient.slots import SlotMap
from ped.daemon.exits import EXIT_ERROR, EXIT_OK
from ped.tls import PinStore
from tests.backup.rig import Site, site
from tests.backup.test_archive_e2e import make_keys
from tests.hsm.rig import CHAL
from tests.hsmclient.test_daemon import P11KIT
from tests.pedserver.fakes import short_tmp


async def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await trio.to_thread.run_sync(lambda: main(list(argv), out=out, err=err))
    return code, out.getvalue(), err.getvalue()


async def test_archive_backup_list_restore_delete_from_the_command_line(tmp_path: Path) -> None:
    chal = tmp_path / "challenge.txt"
    chal.write_bytes(CHAL + b"\n")
    with short_tmp() as home:
        async with site(tmp_path, client_home=home) as s, trio.open_nursery() as nursery:
            await _daemon(s, home, nursery)
            src = await s.co_session("hsm1")
            await make_keys(s, src, 2)
            p1, p2, admin = (await s.slot("hsm1", "p1"), await s.slot("hsm2", "p1"),
                             await s.slot("hsm3", "backup HSM"))  # fmt: skip
            s.backup.ped.keys["source-red"] = s.source.ped.keys["p1-dom"]
            s.backup.ped.plan.append("source-red")
            common = ("--home", str(home))
            code, out, err = await _cli("partition", "archive", "backup", *common,
                                        "--source-slot", str(p1), "--slot", str(admin),
                                        "--partition", "nightly", "--password-file", str(chal))
            assert code == EXIT_OK, err
            assert out.startswith("Backup partition 'nightly' (serial 150003")
            assert "holds 4 objects of slot" in out
            # LunaCM's spellings.
            code, out, err = await _cli("partition", "archive", "restore", *common,
                                        "-slot", str(admin), "-partition", "nightly",
                                        "-targetslot", str(p2), "-replace",
                                        "-password", CHAL.decode())  # fmt: skip
            assert code == EXIT_OK, err
            assert out == (f"Backup partition 'nightly' (4 objects) restored into slot {p2} "
                           "in one transaction.\n")  # fmt: skip
            assert len(s.target.store.token_objects("p1")) == 4
            code, out, _ = await _cli("partition", "archive", "list", *common, "--slot",
                                      str(admin), "--json")  # fmt: skip
            (row,) = json.loads(out)
            assert code == EXIT_OK and row["name"] == "nightly" and row["objects"] == 4
            code, out, _ = await _cli("partition", "archive", "list", *common, "-slot",
                                      str(admin))  # fmt: skip
            assert code == EXIT_OK and "nightly" in out and row["domain"] in out
            # A slot that is not a Backup HSM's admin slot, then the refused second backup.
            code, out, err = await _cli("partition", "archive", "list", *common,
                                        "--slot", str(p1))  # fmt: skip
            assert code == EXIT_ERROR and out == ""
            assert err.startswith("hsmclient: partition archive list failed: ")
            assert "not a Backup HSM" in err
            code, _, err = await _cli("partition", "archive", "backup", *common,
                                      "--source-slot", str(p1), "--slot", str(admin),
                                      "--partition", "nightly", "--password-file", str(chal))
            assert code == EXIT_ERROR and "--append" in err and CHAL.decode() not in err
            code, out, err = await _cli("partition", "archive", "delete", *common, "--slot",
                                        str(admin), "--partition", "nightly")  # fmt: skip
            assert (code, out) == (EXIT_OK, "Backup partition 'nightly' deleted.\n"), err
            code, out, _ = await _cli("partition", "archive", "list", *common, "--slot",
                                      str(admin))  # fmt: skip
            assert out == f"No backup partitions on the Backup HSM of slot {admin}.\n"
            nursery.cancel_scope.cancel()


async def _daemon(s: Site, home: Path, nursery: trio.Nursery) -> None:
    layout = Layout(home)
    backend = RemoteBackend(home, PinStore(home, program="hsmclient"), SlotMap(home))
    client = HsmClient(Settings(), home=home, endpoint_path=layout.endpoint, backend=backend,
                       control_path=layout.control, p11kit=P11KIT)  # fmt: skip
    await nursery.start(client.serve)
