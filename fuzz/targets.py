"""What the fuzzers feed, and what counts as an acceptable failure.

Theory of operation
-------------------
Every decoder that bytes from a peer (or a key image file) can reach is listed here once,
so that the atheris harnesses in this directory and the hypothesis tests in
``tests/adversarial`` exercise the same set:

* `DECODERS`: one entry per frame type of every layer (link 0x01-0x1F, end to end
  0x20-0x2F, device transport 0x30-0x3F, local endpoint 0x40-0x4F, PED operations
  0x50-0x6F) plus the payloads that only appear inside another one (the PED info inside
  handshake message 2, the padded plaintext inside a SEALED frame).  Each entry takes a
  payload and decodes it the way the receiving hop does.  The table is built from the
  layers' own type registries, so a new message type is fuzzed without touching this
  file; `missing_types` says if one was forgotten.
* `dispatch(frame)`: hand a frame to every decoder registered for its type.
* `decode_stream(data, chunks)`: the frame decoder fed in arbitrary pieces, each frame it
  yields dispatched, then end of stream.
* `decode_key_image(data)`: the key-image parser, raw and with the digest fixed up (the
  digest is a plain SHA-256, so a forger recomputes it; the fuzzer should too, to reach
  the field checks behind it).
* `one_connection(data)` (`fuzz.connection_target`): the sans-IO link and device
  connections the daemons run, fed whatever their peer sends (state machines, not just
  decoders).
* `rogue_peer(data)`: a peer that holds the right RPV (a rogue HSM or a rogue PED) sends
  arbitrary operation plaintexts through a genuine channel; the other end's session
  logic must refuse them with typed errors.

`EXPECTED` is the contract: only the project's typed errors may come out.  Anything else
(`ValueError`, `KeyError`, `AssertionError`, `UnicodeDecodeError`...) is a finding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from fuzz import pake_targets
from fuzz.cloning_target import one_cloning
from fuzz.connection_target import one_connection
from fuzz.ntls_target import one_ntls
from keys.colors import Color
from keys.errors import KeyImageError
from keys.image import IMAGE_SIZE
from keys.image import decode as decode_image
from ped.channel import (
    ChannelInitiator,
    ChannelResponder,
    HandshakeInit,
    HandshakeRefusal,
    PedInfo,
    SecureChannel,
)
from ped.channel.noise import CipherState
from ped.channel.padding import PAD_BLOCK
from ped.device import messages as device_messages
from ped.errors import PedError
from ped.link import messages as link_messages
from ped.ops import HsmSideSession, PedSideSession
from ped.ops import messages as op_messages
from ped.wire.framing import (
    MAX_PAYLOAD,
    NEED_DATA,
    Frame,
    FrameDecoder,
    decode_frame,
    encode_frame,
)
from ped.wire.types import DEVICE_RANGE, E2E_TYPES, LINK_RANGE, LOCAL_RANGE, OPS_RANGE, E2EType

#: The only exceptions a decoder may raise on hostile input.
EXPECTED: tuple[type[BaseException], ...] = (PedError, KeyImageError)

RPV = bytes(range(32))
HSM_SERIAL = "150001"
#: Fixed keys for the cheap channels the fuzzers decrypt with (never used for real).
_KEY_A = bytes([0x5A]) * 32
_KEY_B = bytes([0xA5]) * 32

Decoder = Callable[[bytes], object]


# ---- end-to-end payloads ------------------------------------------------------------------


def _handshake_init(payload: bytes) -> object:
    frame = Frame(E2EType.HANDSHAKE_INIT, payload)
    HandshakeInit.from_frame(frame)
    return ChannelResponder().receive_init(frame)


def _handshake_answer(type_: int) -> Decoder:
    def decode(payload: bytes) -> object:
        initiator = ChannelInitiator(rpv=RPV, hsm_serial=HSM_SERIAL)
        initiator.start()
        return initiator.receive(Frame(type_, payload))

    return decode


def _handshake_refused(payload: bytes) -> object:
    refusal = HandshakeRefusal.from_frame(Frame(E2EType.HANDSHAKE_REFUSED, payload))
    return str(refusal.error())


def _sealed(payload: bytes) -> object:
    channel = SecureChannel(
        CipherState(_KEY_A), CipherState(_KEY_B), bytes(32), role="responder", padded=True
    )
    return channel.open(Frame(E2EType.SEALED, payload))


def _sealed_padded_body(payload: bytes) -> object:
    """A suite-2 plaintext as it comes out of decryption: length field, message, padding.

    Random SEALED payloads never authenticate, so this one is encrypted under the key the
    channel of `_sealed` opens with: the fuzzer reaches the padding checks behind the tag.
    """
    body = payload + bytes(-len(payload) % PAD_BLOCK)
    return _sealed(CipherState(_KEY_B).encrypt_with_ad(b"", body))


def _ped_session_before_handshake(type_: int) -> Decoder:
    """A PED that has not handshaken yet gets this frame: nothing may be served."""

    def decode(payload: bytes) -> object:
        session = PedSideSession()
        events = session.receive_frame(Frame(type_, payload))
        for event in events:
            name = type(event).__name__
            if name not in ("RpvRequired", "SessionFailed"):
                raise AssertionError(f"a PED with no channel produced {name}")
        return events

    return decode


# ---- the registry -------------------------------------------------------------------------


def _build() -> dict[str, tuple[int | None, Decoder]]:
    table: dict[str, tuple[int | None, Decoder]] = {}
    for t in list(link_messages.LinkType) + list(link_messages.LocalType):
        table[f"link.{t.name}"] = (int(t), lambda p, t=int(t): link_messages.decode(Frame(t, p)))
    for t, cls in sorted(device_messages.MESSAGE_CLASSES.items()):
        table[f"device.{cls.__name__}"] = (
            t,
            lambda p, t=t: device_messages.decode_message(Frame(t, p)),
        )
    for t, cls in sorted(op_messages.MESSAGE_CLASSES.items()):
        table[f"ops.{cls.__name__}"] = (
            int(t),
            lambda p, t=int(t): op_messages.decode_message(encode_frame(Frame(t, p))),
        )
    table["e2e.HANDSHAKE_INIT"] = (E2EType.HANDSHAKE_INIT, _handshake_init)
    table["e2e.HANDSHAKE_RESPONSE"] = (
        E2EType.HANDSHAKE_RESPONSE,
        _handshake_answer(E2EType.HANDSHAKE_RESPONSE),
    )
    table["e2e.HANDSHAKE_REFUSED"] = (E2EType.HANDSHAKE_REFUSED, _handshake_refused)
    table["e2e.SEALED"] = (E2EType.SEALED, _sealed)
    # The padded plaintext inside (after decryption): no frame type of its own.
    table["e2e.SEALED.padded_body"] = (None, _sealed_padded_body)
    for t in E2EType:
        table[f"e2e.ped_session.{t.name}"] = (int(t), _ped_session_before_handshake(int(t)))
    # Only ever inside handshake message 2 (after decryption): no frame type of its own.
    table["e2e.PedInfo"] = (None, PedInfo.decode)
    table.update(pake_targets.DECODERS)  # remote RPV initialisation (ped.pake)
    return table


DECODERS: dict[str, tuple[int | None, Decoder]] = _build()
BY_TYPE: dict[int, list[Decoder]] = {}
for _type, _decoder in DECODERS.values():
    if _type is not None:
        BY_TYPE.setdefault(_type, []).append(_decoder)


def missing_types() -> set[int]:
    """Frame types some layer defines that no decoder here covers (should be empty)."""
    defined = (
        {int(t) for t in link_messages.LinkType}
        | {int(t) for t in link_messages.LocalType}
        | set(device_messages.MESSAGE_CLASSES)
        | set(E2E_TYPES)
        | {int(t) for t in op_messages.MESSAGE_CLASSES}
    )
    return defined - set(BY_TYPE)


def layer_of(type_: int) -> str:
    for name, span in (
        ("link", LINK_RANGE),
        ("e2e", range(0x20, 0x30)),
        ("device", DEVICE_RANGE),
        ("local", LOCAL_RANGE),
        ("ops", OPS_RANGE),
    ):
        if type_ in span:
            return name
    return "none"


def dispatch(frame: Frame) -> None:
    """Give *frame* to every decoder of its type; typed errors are the expected outcome."""
    for decoder in BY_TYPE.get(frame.type, ()):
        try:
            decoder(frame.payload)
        except EXPECTED:
            pass


# ---- the frame decoder ----------------------------------------------------------------------


def decode_stream(data: bytes, chunks: Iterable[int], *, max_payload: int = MAX_PAYLOAD) -> int:
    """Feed *data* to a `FrameDecoder` in pieces of the given sizes; return frames seen.

    Besides "only typed errors", checks the decoder's promise: it never holds more than
    one maximum frame plus the piece just fed.
    """
    try:
        decode_frame(data, max_payload=max_payload)
    except EXPECTED:
        pass
    decoder = FrameDecoder(max_payload=max_payload)
    count = 0
    offset = 0
    sizes = iter(chunks)
    try:
        while offset < len(data):
            size = max(1, next(sizes, len(data) - offset))
            piece = data[offset : offset + size]
            offset += size
            decoder.feed(piece)
            while (frame := decoder.next_frame()) is not NEED_DATA:
                count += 1
                dispatch(frame)
            if decoder.buffered > 8 + max_payload + len(piece):
                raise AssertionError(f"frame decoder holds {decoder.buffered} bytes")
        decoder.check_eof()
    except EXPECTED:
        pass
    return count


# ---- key images ---------------------------------------------------------------------------


def decode_key_image(data: bytes) -> None:
    """The key-image parser on *data*, and on *data* with a recomputed digest."""
    for candidate in (data, fix_digest(data)):
        try:
            image = decode_image(candidate)
        except EXPECTED:
            continue
        # Whatever decodes must be self-consistent: re-encoding gives the same bytes.
        reencoded = image.to_bytes()
        try:
            if bytes(reencoded) != bytes(candidate):
                raise AssertionError("a decoded key image does not re-encode to its bytes")
            str(image.header.describe())
        finally:
            reencoded[:] = bytes(len(reencoded))
            image.wipe()


def fix_digest(data: bytes) -> bytes:
    """*data* cut or padded to an image body, with its SHA-256 digest appended."""
    body = bytes(data[: IMAGE_SIZE - 32]).ljust(IMAGE_SIZE - 32, b"\x00")
    return body + hashlib.sha256(body).digest()


# ---- a rogue peer holding the right RPV ----------------------------------------------------


def connected_pair() -> tuple[HsmSideSession, PedSideSession]:
    hsm = HsmSideSession(rpv=RPV, hsm_serial=HSM_SERIAL)
    ped = PedSideSession(ped_info=PedInfo("fuzz", "F-1", "0"))
    ped.receive_frame(hsm.start_handshake())
    ped.supply_rpv(RPV)
    for frame in ped.frames_to_send():
        hsm.receive_frame(frame)
    return hsm, ped


def rogue_peer(selector: int, plaintexts: list[bytes]) -> None:
    """Seal arbitrary operation plaintexts with a genuine channel and feed the other end.

    *selector* bit 0: 0 = a rogue HSM talks to our PED session, 1 = a rogue PED talks to
    our HSM session; bits 1-2 choose which request the HSM has outstanding.
    """
    hsm, ped = connected_pair()
    if selector & 1 == 0:
        rogue = hsm._channel  # the rogue HSM seals what it likes with the real keys
        assert rogue is not None
        for plaintext in plaintexts:
            events = ped.receive_frame(rogue.seal(plaintext[: 16 * 1024]))
            for event in events:
                error = getattr(event, "error", None)
                if error is not None and not isinstance(error, EXPECTED):
                    raise AssertionError(f"PED session failed with untyped {error!r}")
            if not ped.is_open:
                break
            ped.frames_to_send()
        return
    rogue = ped._channel
    assert rogue is not None
    request = (selector >> 1) & 3
    try:
        if request == 0:
            hsm.read_secret(Color.BLUE)
        elif request == 1:
            hsm.imprint(Color.BLUE, new_secret=bytes(32), allow_reuse=True)
        elif request == 2:
            hsm.show_message("fuzz")
        for plaintext in plaintexts:
            hsm.receive_frame(rogue.seal(plaintext[: 16 * 1024]))
    except EXPECTED:
        pass


# ---- what each harness does with one fuzzer input ------------------------------------------


def one_frames(data: bytes) -> None:
    """Byte 0: how many piece sizes follow (0-7); then the sizes; then the stream."""
    if not data:
        return
    count = data[0] & 7
    sizes = list(data[1 : 1 + count]) or [len(data)]
    stream = data[1 + count :]
    decode_stream(stream, sizes * (len(stream) // max(1, sum(sizes)) + 1))


_NAMES = sorted(DECODERS)


def one_message(data: bytes) -> None:
    """Byte 0 picks a decoder (sorted by name, modulo their number); the rest is its payload."""
    if not data:
        return
    _type, decoder = DECODERS[_NAMES[data[0] % len(_NAMES)]]
    try:
        decoder(data[1:])
    except EXPECTED:
        pass


def one_key_image(data: bytes) -> None:
    decode_key_image(data)


def one_rogue_peer(data: bytes) -> None:
    """Byte 0: selector; then up to 8 plaintexts, each a u16 length and its bytes."""
    if not data:
        return
    plaintexts: list[bytes] = []
    offset = 1
    while offset + 2 <= len(data) and len(plaintexts) < 8:
        size = int.from_bytes(data[offset : offset + 2], "big")
        plaintexts.append(data[offset + 2 : offset + 2 + size])
        offset += 2 + size
    rogue_peer(data[0], plaintexts)


#: Harness name -> what it does with one input (the ``fuzz_<name>.py`` files run these).
HARNESSES: dict[str, Callable[[bytes], None]] = {
    "frames": one_frames,
    "messages": one_message,
    "key_image": one_key_image,
    "rogue_peer": one_rogue_peer,
    "connections": one_connection,
    "pake": pake_targets.one_pake,
    "ntls": one_ntls,
    "cloning": one_cloning,
}
