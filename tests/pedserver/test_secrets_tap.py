"""The promise, checked on real processes: pedserver and pedclient never see a secret.

A real end-to-end channel (ped.hsm_api, keyed by an orange key's RPV) runs through real
pedclient and pedserver processes to the emulated PED (pedemu, auto operator).  Three
taps record every byte the relays send and receive: HSM <-> pedclient (local endpoint),
pedclient <-> pedserver (network) and pedserver <-> PED (device side).  The HSM reads a
key of every colour (with PED PINs and an M of N split), with a short and a long label,
imprints two keysets and shows two messages.  No RPV, PSK, key secret, key share,
PIN-derived secret, PIN or imprinted secret appears in any tapped byte or in either
daemon's debug log; and every SEALED frame on every tap is the same size (PROTOCOL.md
3.6), so sizes do not tell a read from an imprint or a show, a colour from another, or a
short label from a long one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

from keys import load_image
from keys.collector import ShareCollector
from keys.colors import Color
from ped.channel.handshake import derive_psk
from ped.daemon.control import control_request_sync
from ped.hsm_api import PedSession, open_ped_session
from ped.link import connect_via_pedclient
from pedtools.testing import wait_for_log
from pedtools.testing.tap import tcp_tap, unix_tap

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

#: (colour, label, PIN or None, M, N)
KEYS = [
    (Color.BLUE, "HSM SO", "90817263", 1, 1),
    (Color.RED, "Domain", None, 1, 1),
    (Color.BLACK, "Crypto Officer", "56473829", 2, 3),
    (Color.GRAY, "Crypto User", None, 1, 1),
    (Color.WHITE, "Auditor", None, 1, 1),
    (Color.PURPLE, "Recovery", None, 1, 1),
]


#: Labels and texts as long as the protocol allows (PROTOCOL.md 4).
LONG_LABEL = "L" * 128
LONG_TEXT = "T" * 512
#: (colour, label, new secret) of the keysets the HSM imprints.
IMPRINTS = [
    (Color.BLUE, "New SO", bytes([0x5E]) * 32),
    (Color.RED, LONG_LABEL, bytes([0xE5]) * 32),
]
#: Every SEALED frame of an operation, whole on the wire: 8 + 544 + 16 bytes.
SEALED_FRAME_SIZE = 568
SEALED = 0x23
SESSION_DATA = 0x35
#: Requests (and answers) of `run_every_operation`: two reads per colour, imprints, shows.
OPERATIONS = 2 * len(KEYS) + len(IMPRINTS) + 2


async def run_every_operation(ped: PedSession) -> dict[Color, bytes]:
    """Read every colour with its label and a long one, imprint, show short and long."""
    got: dict[Color, bytes] = {}
    for color, label, *_ in KEYS:
        for asked in (label, LONG_LABEL):
            result = await ped.read_secret(color, label=asked)
            assert got.setdefault(color, bytes(result.secret)) == bytes(result.secret)
    for color, label, secret in IMPRINTS:
        imprinted = await ped.imprint(color, new_secret=secret, label=label)
        assert imprinted.secret is None and not imprinted.reused  # the HSM's secret stands
    await ped.show_message("Hi")
    await ped.show_message(LONG_TEXT)
    return got


def sealed_frame_sizes(data: bytes | bytearray, *, device: bool = False) -> list[int]:
    """The size on the wire of each SEALED frame in a tapped stream of whole frames.

    On the device side a SEALED frame travels as the rest of a SESSION_DATA payload (u32
    session, u8 type 0x23, the SEALED payload): its size is counted as the frame it is.
    """
    sizes: list[int] = []
    offset = 0
    while offset < len(data):
        assert data[offset : offset + 2] == b"RP", f"not a frame at byte {offset}"
        length = int.from_bytes(data[offset + 4 : offset + 8], "big")
        kind, payload = data[offset + 3], data[offset + 8 : offset + 8 + length]
        if not device and kind == SEALED:
            sizes.append(8 + length)
        elif device and kind == SESSION_DATA and payload[4] == SEALED:
            sizes.append(8 + length - 5)
        offset += 8 + length
    return sizes


def assert_sealed_frames_are_one_size(taps: dict[str, tuple[bytes | bytearray, bool]]) -> None:
    """Each tap (bytes, device side?) saw every operation, each SEALED frame 568 bytes."""
    for where, (data, device) in taps.items():
        sizes = sealed_frame_sizes(data, device=device)
        assert len(sizes) >= OPERATIONS, f"{where}: {len(sizes)} SEALED frames"
        assert set(sizes) == {SEALED_FRAME_SIZE}, (
            f"{where}: SEALED frames of {sorted(set(sizes))} bytes tell operations apart"
        )


def _pedkey(*argv: str) -> None:
    result = subprocess.run([str(BIN / "pedkey"), *argv], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def _make_keys(keyring: Path, pins: Path) -> tuple[bytearray, dict[Color, bytes], list[bytes]]:
    pins.write_text("".join(f"{label} = {pin}\n" for _, label, pin, _, _ in KEYS if pin))
    _pedkey("new", "--color", "orange", "--label", "RPV", "--create", "--dir", str(keyring))
    for color, label, pin, m, n in KEYS:
        extra = ["--pin-file", str(pins)] if pin else []
        _pedkey("new", "--color", color.label, "--label", label, "--m", str(m), "--n", str(n),
                *extra, "--create", "--dir", str(keyring))
    collectors: dict[Color, ShareCollector] = {}
    shares: list[bytes] = []
    for path in sorted(keyring.glob("*.pedkey")):
        image = load_image(path)
        if image.is_blank:
            continue
        collector = collectors.setdefault(image.color, ShareCollector(image.color))
        if collector.complete:
            continue
        collector.add(image)
        shares.append(bytes(image.share().value))
    rpv = collectors[Color.ORANGE].secret()
    pin_of = {color: pin for color, _, pin, _, _ in KEYS}
    expected = {color: bytes(collectors[color].secret_for_hsm(pin_of[color]))
                for color, *_ in KEYS}
    secrets = [bytes(collectors[color].secret()) for color, *_ in KEYS]
    return rpv, expected, shares + secrets


def _forbidden_forms(value: bytes) -> list[bytes]:
    return [value, value.hex().encode(), value.hex().upper().encode()]


def _stop_daemons(server_home: Path, client_home: Path) -> None:
    for argv in (["pedclient", "mode", "stop", "--home", str(client_home)],
                 ["pedserver", "mode", "stop", "--home", str(server_home)]):
        subprocess.run([sys.executable, "-m", *argv], capture_output=True, timeout=60,
                       cwd=ROOT)


async def _wait_for(path: Path) -> None:
    with trio.fail_after(30):
        while not path.exists():
            await trio.sleep(0.05)


async def test_no_secret_crosses_the_relays(home):
    keyring, pins = home / "keys", home / "pins.txt"
    keyring.mkdir()
    rpv, expected, other_secrets = _make_keys(keyring, pins)
    server_home, client_home = home / "s", home / "c"
    server_home.mkdir(mode=0o700)
    client_home.mkdir(mode=0o700)
    pedemu = subprocess.Popen(
        [str(BIN / "pedemu"), "--keyring", str(keyring), "--socket", str(home / "ped.sock"),
         "--operator", "auto", "--pin-file", str(pins), "--log-level", "debug"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    got: dict[Color, bytes] = {}
    try:
        async with trio.open_nursery() as nursery:
            await _wait_for(home / "ped.sock")
            device_tap = await unix_tap(nursery, home / "tap-ped.sock", home / "ped.sock")
            for argv in (
                ["pedserver", "mode", "start", "--ip", "127.0.0.1", "--port", "0",
                 "--device", f"socket:{home / 'tap-ped.sock'}", "--log-level", "debug",
                 "--home", str(server_home)],
                ["pedclient", "mode", "start", "--log-level", "debug", "--home",
                 str(client_home)],
            ):
                started = await trio.to_thread.run_sync(lambda argv=argv: subprocess.run(
                    [sys.executable, "-m", *argv], capture_output=True, text=True,
                    timeout=60, cwd=ROOT))
                assert started.returncode == 0, started.stderr
            port = control_request_sync(server_home / "control.sock", "show")["port"]
            net_tap, net_port = await tcp_tap(nursery, port)
            local_tap = await unix_tap(nursery, home / "tap-client.sock",
                                       client_home / "pedclient.sock")
            transport = await connect_via_pedclient(home / "tap-client.sock", "127.0.0.1",
                                                    net_port, hsm_name="tap-test")
            with trio.fail_after(120):
                async with open_ped_session(transport, rpv=bytes(rpv),
                                            hsm_serial="150001") as ped:
                    got = await run_every_operation(ped)
            await transport.aclose()
            # Stopped, the daemons close every connection: once each tap has seen the end
            # of all its streams, it holds every byte the relays sent.
            await trio.to_thread.run_sync(_stop_daemons, server_home, client_home)
            for tap in (local_tap, net_tap, device_tap):
                await tap.wait_ended()
            nursery.cancel_scope.cancel()
    finally:
        _stop_daemons(server_home, client_home)
        pedemu.terminate()
        pedemu.wait(timeout=30)
    assert got == expected  # the HSM got every secret (through the relays, sealed)
    psk = bytes(derive_psk(rpv))
    forbidden = [bytes(rpv), psk, *expected.values(), *other_secrets,
                 *(secret for _, _, secret in IMPRINTS)]
    pin_texts = [pin.encode() for _, _, pin, _, _ in KEYS if pin]
    taps = {
        "HSM -> pedclient": local_tap.up, "pedclient -> HSM": local_tap.down,
        "pedclient -> pedserver": net_tap.up, "pedserver -> pedclient": net_tap.down,
        "pedserver -> PED": device_tap.up, "PED -> pedserver": device_tap.down,
    }
    device_side = {"pedserver -> PED", "PED -> pedserver"}
    assert_sealed_frames_are_one_size(
        {where: (data, where in device_side) for where, data in taps.items()}
    )
    wait_for_log(server_home / "pedserver.log", "key-read black")  # written just after
    logs = {
        "pedserver log": (server_home / "pedserver.log").read_bytes(),
        "pedclient log": (client_home / "pedclient.log").read_bytes(),
    }
    assert all(len(data) > 200 for data in taps.values())  # the taps did see the session
    assert b"key-read black" in logs["pedserver log"]  # operations were logged...
    for where, data in {**taps, **logs}.items():
        for value in forbidden:
            for form in _forbidden_forms(value):
                assert bytes(form) not in bytes(data), f"a secret appeared in {where}"
        for pin in pin_texts:
            assert pin not in bytes(data), f"a PIN appeared in {where}"
