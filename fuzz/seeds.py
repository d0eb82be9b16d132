"""Seed inputs for the harnesses: one valid example of every message, frame and image.

``python fuzz/seeds.py DIR`` writes them under DIR/<harness>/ (run.py does this for an
empty corpus).  Valid inputs let the fuzzer start past the magic, version and digest
checks instead of having to discover them.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fuzz import connection_target, targets  # noqa: E402
from fuzz.cloning_target import seeds as cloning_seeds  # noqa: E402
from fuzz.ntls_target import seeds as ntls_seeds  # noqa: E402
from keys.colors import Color  # noqa: E402
from keys.image import KeyImage  # noqa: E402
from keys.shamir import split  # noqa: E402
from ped.device import messages as dev  # noqa: E402
from ped.link import messages as link  # noqa: E402
from ped.ops import messages as ops  # noqa: E402
from ped.ops.errors import ErrorCode  # noqa: E402
from ped.wire.framing import Frame, encode_frame  # noqa: E402
from ped.wire.types import CloseCode  # noqa: E402

SECRET = bytes(range(0x40, 0x60))
KEYSET = bytes(range(16))


def op_examples() -> list[ops.OpMessage]:
    return [
        ops.ReadSecret(1, Color.BLUE, KEYSET, "HSM SO", 200_000),
        ops.ReadSecret(1, Color.BLACK, None, "", 1),
        ops.ImprintRequest(1, Color.RED, SECRET, True, "domain"),
        ops.ImprintRequest(1, Color.ORANGE, None, True),
        ops.ShowMessage(1, "Hello"),
        ops.Cancel(1),
        ops.ReadResult(1, Color.BLUE, KEYSET, 2, 3, SECRET),
        ops.ImprintResult(1, Color.BLUE, KEYSET, 1, 1, False, 2),
        ops.ImprintResult(1, Color.BLUE, KEYSET, 2, 3, True, 3, False, SECRET),
        ops.ImprintResult(1, Color.BLUE, KEYSET, 3, 5, False, 0, True, SECRET),
        ops.ShowDone(1),
        ops.Notice(1, ops.NoticeKind.INSERT_KEY, 1, 3, "Insert key 1 of 3"),
        ops.OpError(1, ErrorCode.WRONG_COLOR, "red key"),
        ops.Goodbye(ops.CloseReason.NORMAL, "bye"),
    ]


def link_examples() -> list[Frame]:
    device = link.DeviceSummary(True, "pedemu", "1.0", "E-1", "remote")
    messages = [
        link.LinkHello(1, 1, 1800, "pedclient"),
        link.LinkWelcome(1, 1800, 30, "pedserver", device),
        link.LinkRefused(link.RefuseCode.TOO_MANY_LINKS, "full"),
        link.OpBegin(1000),
        link.OpBegin(1000, 920),  # link version 2: the HSM's operation timeout announced
        link.OpGranted(),
        link.Busy("hsm-2"),
        link.OpEnd(),
        link.Keepalive(7),
        link.KeepaliveAck(7),
        link.Close(CloseCode.IDLE_TIMEOUT, "idle"),
        link.ConnectRequest(host="ped.example", port=1503, hsm_name="150001"),
        link.ConnectRequest(peer="ws-1"),
        link.ConnectResult(link.ConnectCode.OK, "", 1, 1800, "pedserver", device),
        link.ConnectResult(link.ConnectCode.REFUSED, "connection refused"),
    ]
    return [link.encode(m) for m in messages]


def device_examples() -> list[bytes]:
    messages = [
        dev.Hello(1, 1, "pedserver"),
        dev.Info(1, "pedemu", "1.0", "E-1", "remote"),
        dev.SessionOpen(1),
        dev.SessionOpened(1),
        dev.SessionClose(1, dev.SessionCloseReason.NORMAL, "done"),
        dev.SessionData(1, Frame(0x23, bytes(20))),
        dev.DeviceEvent(1, dev.EventKind.KEY_READ, 1, KEYSET.hex()[:16], "ok", ""),
        dev.DeviceErrorMessage(dev.DeviceErrorCode.BUSY, "busy"),
        dev.Ping(1),
        dev.Pong(1),
    ]
    return [dev.encode_message(m) for m in messages]


def protocol_vectors() -> list[bytes]:
    text = (ROOT / "PROTOCOL.md").read_text(encoding="utf-8")
    # The remote RPV initialisation's chapter (PAKE_INIT, PAKE_RESPONSE) too.
    text += (ROOT / "docs" / "protocol" / "pake.md").read_text(encoding="utf-8")
    found = re.findall(r"^(frame_\w+|sealed_\w+|op_\w+) = ([0-9a-f]+)$", text, flags=re.M)
    return [bytes.fromhex(value) for _name, value in found]


def session_frames() -> list[bytes]:
    """A genuine handshake and a sealed request, as the PED receives them."""
    hsm, _ped = targets.connected_pair()
    frames = [encode_frame(hsm.read_secret(Color.BLUE, keyset_id=KEYSET, label="SO"))]
    return frames


def connection_streams() -> list[tuple[int, bytes]]:
    """What each connection's genuine peer sends (index into ``connection_target.CONNECTIONS``)."""
    device = link.DeviceSummary(True, "pedemu", "1.0", "E-1", "remote")
    e2e = Frame(0x23, bytes(32))
    peer_says: dict[str, list[Frame]] = {
        "link.remote.initiator": [
            link.encode(link.LinkWelcome(1, 1800, 30, "pedserver", device)),
            link.encode(link.OpGranted()),  # the harness sent OpBegin on the welcome
            e2e,
            link.encode(link.Keepalive(1)),
            link.encode(link.Close(CloseCode.IDLE_TIMEOUT, "idle")),
        ],
        "link.remote.responder": [
            link.encode(link.LinkHello(1, 1, 1800, "pedclient")),
            link.encode(link.OpBegin(1000)),
            e2e,
            link.encode(link.OpEnd()),
            link.encode(link.KeepaliveAck(1)),
            link.encode(link.Close()),
        ],
        "link.local.initiator": [
            link.encode(link.ConnectResult(link.ConnectCode.OK, "", 1, 1800, "srv", device)),
            link.encode(link.OpGranted()),
            e2e,
            link.encode(link.Close(CloseCode.SERVER_GONE, "gone")),
        ],
        "link.local.responder": [
            link.encode(link.ConnectRequest(host="ped.example", port=1503)),
            link.encode(link.OpBegin(0)),
            e2e,
            link.encode(link.OpEnd()),
        ],
        "device.host": [
            Frame(dev.Info.TYPE, dev.Info(1, "pedemu", "1.0", "E-1", "remote").payload()),
            Frame(dev.SessionOpened.TYPE, dev.SessionOpened(1).payload()),
            Frame(dev.SessionData.TYPE, dev.SessionData(1, e2e).payload()),
            Frame(
                dev.DeviceEvent.TYPE,
                dev.DeviceEvent(1, dev.EventKind.KEY_READ, 1, "ab", "ok").payload(),
            ),
            Frame(dev.SessionClose.TYPE, dev.SessionClose(1).payload()),
        ],
        "device.device": [
            Frame(dev.Hello.TYPE, dev.Hello(1, 1, "pedserver").payload()),
            Frame(dev.SessionOpen.TYPE, dev.SessionOpen(1).payload()),
            Frame(dev.SessionData.TYPE, dev.SessionData(1, e2e).payload()),
            Frame(dev.Ping.TYPE, dev.Ping(7).payload()),
            Frame(dev.SessionClose.TYPE, dev.SessionClose(1).payload()),
        ],
    }
    names = [name for name, _ in connection_target.CONNECTIONS]
    streams: list[tuple[int, bytes]] = []
    for name, frames in peer_says.items():
        index = names.index(name)
        for count in range(1, len(frames) + 1):
            streams.append((index, b"".join(encode_frame(f) for f in frames[:count])))
    return streams


def seeds() -> dict[str, list[bytes]]:
    op_bytes = [m.encode() for m in op_examples()]
    link_frames = link_examples()
    all_frames = (
        protocol_vectors()
        + op_bytes
        + [encode_frame(f) for f in link_frames]
        + device_examples()
        + session_frames()
    )
    frames = [b"\x00" + f for f in all_frames]
    frames.append(b"\x03\x01\x07\x20" + b"".join(all_frames[:6]))
    names = sorted(targets.DECODERS)
    messages: list[bytes] = []
    payloads: dict[int, list[bytes]] = {}
    for raw in all_frames:
        if len(raw) >= 8:
            payloads.setdefault(raw[3], []).append(raw[8:])
    for index, name in enumerate(names):
        type_, _decoder = targets.DECODERS[name]
        if type_ is None:
            messages.append(bytes([index]) + b"\x00\x06pedemu\x00\x03E-1\x00\x031.0")
            continue
        for payload in payloads.get(type_, [b""])[:3]:
            messages.append(bytes([index]) + payload)
    shares = split(SECRET, 2, 3, keyset_id=KEYSET)
    images = [
        bytes(KeyImage.blank(created=1_700_000_000).to_bytes()),
        bytes(KeyImage.imprinted(shares[0], Color.BLUE, "HSM SO", created=1).to_bytes()),
        bytes(
            KeyImage.imprinted(
                shares[2], Color.ORANGE, "RPV", pin_protected=True, created=2
            ).to_bytes()
        ),
    ]
    rogue: list[bytes] = []
    for selector in range(8):
        for message in op_examples():
            raw = message.encode()
            rogue.append(bytes([selector]) + len(raw).to_bytes(2, "big") + raw)
    connections = [bytes([index]) + stream for index, stream in connection_streams()]
    pake = [bytes([8]) + payload for payload in payloads.get(0x24, [])]
    return {
        "pake": pake,
        "connections": connections,
        "frames": frames,
        "messages": messages,
        "key_image": images,
        "rogue_peer": rogue,
        "ntls": ntls_seeds(),
        "cloning": cloning_seeds(),
    }


def write(directory: Path, only: str | None = None) -> int:
    count = 0
    for harness, inputs in seeds().items():
        if only is not None and harness != only:
            continue
        target = directory / harness
        target.mkdir(parents=True, exist_ok=True)
        for data in inputs:
            (target / f"seed-{hashlib.sha1(data).hexdigest()}").write_bytes(data)  # noqa: S324
            count += 1
    return count


if __name__ == "__main__":
    print(write(Path(sys.argv[1])), "seed files written")
