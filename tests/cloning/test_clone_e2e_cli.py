"""``hsmclient partition clone`` through the running daemon: two pedhsm HSMs in process,
the daemon's control socket, the command line's words and exit codes."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import trio

from hsmclient.cli import main
from hsmclient.daemon import HsmClient
from hsmclient.settings import Layout, Settings
from ped.daemon.exits import EXIT_ERROR, EXIT_OK
from ped.pkcs11.constants import CKA, CKM
from ped.pkcs11.token import Attribute, Mechanism
from tests.cloning.test_clone_e2e import EC_PRIV, EC_PUB, Pair, two_hsms
from tests.hsm.rig import CHAL
from tests.hsmclient.test_daemon import P11KIT
from tests.pedserver.fakes import short_tmp


async def _run(
    pair: Pair, home: Path, *words: str, password: tuple[str, ...] = ("--password", CHAL.decode())
) -> tuple[int, str, str, HsmClient]:
    """The command's exit code and words; the daemon runs on (its stop closes the backend)."""
    layout = Layout(home)
    client = HsmClient(Settings(), home=home, endpoint_path=layout.endpoint,
                       backend=pair.backend, control_path=layout.control,
                       p11kit=P11KIT)  # fmt: skip
    await pair.nursery.start(client.serve)
    out, err = io.StringIO(), io.StringIO()
    argv = ["partition", "clone", "--home", str(home), "--source-slot", str(pair.slots[0]),
            "--slot", str(pair.slots[1]), *password, *words]  # fmt: skip
    code = await trio.to_thread.run_sync(lambda: main(argv, out=out, err=err))
    return code, out.getvalue(), err.getvalue(), client


async def test_partition_clone_asks_the_daemon_and_the_key_signs_on_the_target(
    tmp_path: Path,
) -> None:
    with short_tmp() as home:
        async with two_hsms(tmp_path, same_domain=True, client_home=home) as pair:
            app, (src, dst) = pair.app, pair.sessions
            pub, _ = await app.generate_key_pair(src, Mechanism(CKM.EC_KEY_PAIR_GEN),
                                                 EC_PUB, EC_PRIV)  # fmt: skip
            code, out, err, client = await _run(pair, home, "--objects", "app-key")
            assert code == EXIT_OK, err
            assert out == (f"2 objects cloned from slot {pair.slots[0]} to slot "
                           f"{pair.slots[1]}\n")  # fmt: skip
            found = await app.find_objects(dst, [Attribute(CKA.LABEL, b"app-key"),
                                                 Attribute(CKA.SIGN, True)])  # fmt: skip
            digest = hashlib.sha256(b"through the daemon").digest()
            signature = await app.sign(dst, Mechanism(CKM.ECDSA), found[0], digest)
            await app.verify(src, Mechanism(CKM.ECDSA), pub, digest, signature)
            client.request_stop("test")


async def test_partition_clone_of_another_domain_says_so_and_creates_nothing(
    tmp_path: Path,
) -> None:
    with short_tmp() as home:
        async with two_hsms(tmp_path, same_domain=False, client_home=home) as pair:
            app, (src, _) = pair.app, pair.sessions
            await app.generate_key_pair(src, Mechanism(CKM.EC_KEY_PAIR_GEN), EC_PUB, EC_PRIV)
            code, out, err, client = await _run(pair, home, "--objects", "app-key")
            client.request_stop("test")
            assert code == EXIT_ERROR and out == ""
            assert err.startswith("hsmclient: partition clone failed: ")
            assert "different cloning domains" in err
            assert "CHAL" not in err and CHAL.decode() not in err
            assert pair.target.store.token_objects("p1") == []


async def test_the_challenge_can_come_from_a_file_kept_off_the_command_line(
    tmp_path: Path,
) -> None:
    chal_file = tmp_path / "challenge.txt"
    chal_file.write_bytes(CHAL + b"\n")
    with short_tmp() as home:
        async with two_hsms(tmp_path, same_domain=True, client_home=home) as pair:
            app, (src, _) = pair.app, pair.sessions
            await app.generate_key_pair(src, Mechanism(CKM.EC_KEY_PAIR_GEN), EC_PUB, EC_PRIV)
            code, out, err, client = await _run(
                pair, home, "--objects", "app-key", password=("--password-file", str(chal_file))
            )
            assert code == EXIT_OK and out.startswith("2 objects cloned"), err
            missing = tmp_path / "nowhere.txt"
            argv = ["partition", "clone", "--home", str(home), "--source-slot", "0", "--slot",
                    "1", "--password-file", str(missing), "--objects", "app-key"]  # fmt: skip
            out_io, err_io = io.StringIO(), io.StringIO()
            code = await trio.to_thread.run_sync(lambda: main(argv, out=out_io, err=err_io))
            client.request_stop("test")
            assert code == EXIT_ERROR
            assert f"cannot read the challenge file {missing}" in err_io.getvalue()
