"""ped.testing's `remote_ped`: an HSM under test reads keys over real pedclient/pedserver."""

from __future__ import annotations

import hmac
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keys import Color, Keyring, ShareCollector, load_image, wipe
from ped.channel.errors import RpvMismatch
from ped.hsm_api import open_ped_session
from pedtools.testing import RemotePed, processes_naming


async def test_imprint_then_read_through_the_real_daemons(remote_ped: RemotePed) -> None:
    secret = bytearray(secrets.token_bytes(32))
    async with remote_ped.session(hsm_serial="700001") as ped:
        assert ped.ped_info is not None
        made = await ped.imprint(Color.BLUE, new_secret=secret, label="HSM SO")
        assert made.secret is None  # no PIN, no reuse: the login secret is ours
        got = await ped.read_secret(Color.BLUE, made.keyset_id, label="HSM SO")
        assert hmac.compare_digest(bytes(got.secret), bytes(secret))
        assert (got.m, got.n, got.keyset_id) == (1, 1, made.keyset_id)
    # the key really is on disk in the fixture's keyring, under the PED's auto operator
    [blue] = [e.path for e in Keyring(remote_ped.keyring).keys(color=Color.BLUE)]
    image = load_image(blue)
    collector = ShareCollector(Color.BLUE)
    collector.add(image)
    image.wipe()
    rebuilt = collector.secret()
    assert hmac.compare_digest(bytes(rebuilt), bytes(secret))
    wipe(rebuilt)
    wipe(secret)
    # pedserver logged the operation, without the secret
    log = remote_ped.pedserver_log().read_text()
    assert secret.hex() not in log


async def test_connect_gives_a_frame_transport_and_a_wrong_rpv_is_refused(
    remote_ped: RemotePed,
) -> None:
    transport = await remote_ped.connect()
    try:
        wrong = bytearray(secrets.token_bytes(32))
        with pytest.raises(RpvMismatch):
            async with open_ped_session(transport, rpv=wrong, hsm_serial="700002"):
                pass
    finally:
        await transport.aclose()
    # the right RPV still works on a new link
    async with remote_ped.session() as ped:
        assert ped.usable


def test_fixture_fields(remote_ped: RemotePed) -> None:
    assert remote_ped.host == "127.0.0.1" and 0 < remote_ped.port < 65536
    assert remote_ped.pedclient_socket.is_socket()
    assert remote_ped.pedclient_socket.stat().st_mode & 0o077 == 0
    rpv = remote_ped.rpv()
    assert len(rpv) == 32 and any(rpv)
    assert bytes(rpv).hex() not in repr(remote_ped)
    wipe(rpv)
    assert processes_naming(str(remote_ped.keyring))  # the emulated PED runs


def test_usable_as_a_pytest_plugin(tmp_path: Path) -> None:
    """An integrator's project: `pytest_plugins = ["ped.testing"]` in its conftest."""
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["ped.testing"]\n')
    (tmp_path / "test_mine.py").write_text(
        textwrap.dedent(
            """
            from keys import Color

            from pathlib import Path

            async def test_hsm(remote_ped):
                Path("root.txt").write_text(str(remote_ped.site.root))
                async with remote_ped.session(hsm_serial="1") as ped:
                    made = await ped.imprint(Color.RED, new_secret=bytes(range(32)), label="Domain")
                    got = await ped.read_secret(Color.RED, made.keyset_id)
                    assert bytes(got.secret) == bytes(range(32))
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "trio",
            "-o",
            "trio_mode=true",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    root = (tmp_path / "root.txt").read_text()
    assert not processes_naming(root)
    assert not Path(root).exists()


class TestOverriddenOptions:
    """An integrator overrides the option fixtures: 2 of 3 keys with a PED PIN."""

    @pytest.fixture
    def remote_ped_options(self) -> dict[str, str]:
        return {"m": "2", "n": "3", "pin": "yes"}

    @pytest.fixture
    def remote_ped_pin_file(self, tmp_path: Path) -> Path:
        path = tmp_path / "pins.txt"
        path.write_text("Integration SO = 31415926\n")
        return path

    async def test_two_of_three_with_a_pin(self, remote_ped: RemotePed) -> None:
        secret = bytearray(secrets.token_bytes(32))
        async with remote_ped.session(hsm_serial="700003") as ped:
            made = await ped.imprint(Color.BLUE, new_secret=secret, label="Integration SO")
            assert (made.m, made.n, made.pin) == (2, 3, True)
            assert made.secret is not None  # the PIN is mixed in: the HSM adopts this
            assert not hmac.compare_digest(bytes(made.secret), bytes(secret))
            got = await ped.read_secret(Color.BLUE, made.keyset_id)
            assert hmac.compare_digest(bytes(got.secret), bytes(made.secret))
        assert len(Keyring(remote_ped.keyring).keys(color=Color.BLUE)) == 3
        wipe(secret)
