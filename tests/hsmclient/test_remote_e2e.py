"""The whole client path with a real PKCS#11 application: pkcs11-tool -> p11-kit-client.so
-> hsmclient's p11-kit server -> RemoteBackend -> pinned TLS (1792) -> pedhsm's listener
-> the real HSM's partition, activated with PED keys.  The README's commands."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

import pytest
import trio

from hsm.ntlsd import NtlsListener, ntls_identity
from hsmclient.p11kit import open_p11kit_listener, serve_p11kit
from hsmclient.remote import RemoteBackend
from hsmclient.slots import SlotMap
from ped.tls import PinStore, ensure_identity
from tests.hsm.rig import CHAL, Rig
from tests.hsm.test_clients_rig import CLIENT, activated
from tests.hsmclient.conftest import require_p11_tools

pytestmark = pytest.mark.process


async def test_pkcs11_tool_keypairgen_sign_verify_through_the_whole_path(tmp_path: Path) -> None:
    module, tool = require_p11_tools()
    hsm_home = tmp_path / "hsm"
    hsm_home.mkdir(mode=0o700)
    rig = Rig(hsm_home)
    try:
        await activated(rig, "p1")
        client_home = tmp_path / "client"
        client = ensure_identity(client_home, "app-host")
        rig.hsm.clients.register(CLIENT, client.certificate_pem, None)
        rig.hsm.clients.assign(CLIENT, "p1")
        listener = NtlsListener(hsm_home, rig.hsm.serial, rig.hsm.client_access, trio.Lock(),
                                port=0, host="127.0.0.1")  # fmt: skip
        socket = tmp_path / "p11kit.sock"
        env = {"P11_KIT_SERVER_ADDRESS": f"unix:path={socket}", "PATH": "/usr/bin:/bin"}

        async def run(*args: str) -> subprocess.CompletedProcess[str]:
            call = functools.partial(
                subprocess.run, [tool, "--module", str(module), *args], env=env,
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            result = await trio.to_thread.run_sync(call)
            assert result.returncode == 0, (args, result.stdout, result.stderr)
            return result

        async with trio.open_nursery() as nursery:
            bound = await nursery.start(listener.run)
            pins = PinStore(client_home, program="hsmclient")
            pins.register("hsm1", ntls_identity(hsm_home, rig.hsm.serial).certificate_pem,
                          ip="127.0.0.1", port=bound[0][1])  # fmt: skip
            backend = RemoteBackend(client_home, pins, SlotMap(client_home))
            await nursery.start(serve_p11kit, open_p11kit_listener(socket), backend)
            slots = await run("--list-slots")
            assert "p1" in slots.stdout
            pin = CHAL.decode()
            await run("--login", "--pin", pin, "--keypairgen", "--key-type", "EC:prime256v1",
                      "--label", "app-key")  # fmt: skip
            data = tmp_path / "data"
            data.write_bytes(hashlib.sha256(b"the message").digest())  # -m ECDSA signs a hash
            sig = tmp_path / "sig"
            await run("--login", "--pin", pin, "--sign", "-m", "ECDSA", "--label",
                      "app-key", "--input-file", str(data), "--output-file", str(sig))  # fmt: skip
            verified = await run("--login", "--pin", pin, "--verify", "-m", "ECDSA",
                                 "--label", "app-key", "--input-file", str(data),
                                 "--signature-file", str(sig))  # fmt: skip
            assert "Signature is valid" in verified.stdout
            await backend.aclose()
            nursery.cancel_scope.cancel()
    finally:
        rig.store.close()
