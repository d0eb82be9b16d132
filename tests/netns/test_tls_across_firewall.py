"""The pinned TLS link between two namespace hosts, with the HSM host (B) firewalled:
pedserver's side (A) dials B and the link works; B cannot dial A at all."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ped.tls import PinStore, regenerate_identity
from tests.netns.harness import TwoHosts

pytestmark = pytest.mark.netns

PORT = 9697

LISTEN = textwrap.dedent(
    """
    import sys, trio
    from ped.tls import PinStore, accept_pinned_tls, load_identity
    home, program, ip, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    async def main():
        identity, pins = load_identity(home), PinStore(home, program=program)
        listeners = await trio.open_tcp_listeners(port, host=ip)
        print("listening", flush=True)
        tcp = await listeners[0].accept()
        stream, name, fp = await accept_pinned_tls(tcp, identity, pins, timeout=10)
        data = await stream.receive_some(100)
        await stream.send_all(data.upper())
        print("accepted", name, fp, flush=True)
    trio.run(main)
    """
)

DIAL = textwrap.dedent(
    """
    import sys, trio
    from ped.tls import PinStore, TlsError, load_identity, open_pinned_tls_client
    home, program, ip, port, name = sys.argv[1:6]
    async def main():
        identity, pins = load_identity(home), PinStore(home, program=program)
        try:
            stream = await open_pinned_tls_client(ip, int(port), identity, pins, timeout=3,
                                                  peer_name=name if name != "-" else None)
        except TlsError as exc:
            print(type(exc).__name__, exc, flush=True)
            sys.exit(2)
        await stream.send_all(b"so login frames")
        print("got", (await stream.receive_some(100)).decode(), flush=True)
    trio.run(main)
    """
)


def test_pinned_tls_link_works_only_from_outside_the_firewall(
    two_hosts: TwoHosts, tmp_path
) -> None:
    a, b = two_hosts.a, two_hosts.b  # A: PED workstation (pedserver); B: HSM host
    ws, hsm = tmp_path / "pedserver", tmp_path / "pedclient"
    ws_id, hsm_id = regenerate_identity(ws, "ws"), regenerate_identity(hsm, "hsm")
    PinStore(ws, program="pedserver").register("hsm1", hsm_id.certificate_pem, ip=b.ip)
    PinStore(hsm, program="pedclient").register("ws1", ws_id.certificate_pem)
    b.block_new_outgoing()

    listener = b.python(LISTEN, str(hsm), "pedclient", b.ip, str(PORT), stdout=subprocess.PIPE)
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == b"listening"
    dial = a.run(
        sys.executable, "-c", DIAL, str(ws), "pedserver", b.ip, str(PORT), "hsm1", check=False
    )
    assert dial.stdout.strip() == "got SO LOGIN FRAMES", dial.stdout + dial.stderr
    listener.wait(timeout=30)
    assert listener.stdout.readline().decode().split() == ["accepted", "ws1", ws_id.fingerprint]

    # The other way round (what standard mode needs: the HSM host dialling out) fails.
    reverse = a.python(LISTEN, str(ws), "pedserver", a.ip, str(PORT), stdout=subprocess.PIPE)
    assert reverse.stdout is not None
    assert reverse.stdout.readline().strip() == b"listening"  # A listens: only B's wall stops it
    back = b.run(
        sys.executable, "-c", DIAL, str(hsm), "pedclient", a.ip, str(PORT), "-", check=False
    )
    assert back.returncode == 2
    assert back.stdout.startswith("HandshakeTimeout no TCP connection"), back.stdout
    assert b.firewall_drops() > 0
