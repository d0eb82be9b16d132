"""Fuzzing in the normal suite (bounded): every message decoder of every layer, reached
through one registry, and the corpus the atheris harnesses built, replayed.

Already covered elsewhere and not repeated here: the bare frame decoder and field codec
(``tests/ped/wire``), operation messages (``tests/ped/ops/test_messages.py``), sessions fed
garbage (``tests/ped/ops/test_session_garbage.py``), handshake frames
(``tests/ped/channel/test_channel.py``), device frames (``tests/ped/device/test_frames.py``)
and the key-image parser (``tests/keys/test_image.py``).  What this adds:

* one parametrized test over ``fuzz.targets.DECODERS`` (built from each layer's type
  registry, so a new message type is fuzzed without editing a test), with arbitrary and
  with mutated genuine payloads; the link layer's messages had no fuzz test before;
* a check that the registry covers every frame type of every layer;
* frame streams of genuine frames of all layers, mutated and cut in arbitrary pieces,
  through the frame decoder and on to each frame's decoders;
* a rogue peer holding the right RPV sending arbitrary operation plaintexts;
* the link and device connections (the daemons' state machines) fed hostile peers;
* every input of ``fuzz/corpus/`` (including any crash the fuzzers once found) run again.

The contract is ``fuzz.targets.EXPECTED``: only the project's typed errors may escape.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import connection_target, seeds, targets
from ped.wire.framing import MAX_PAYLOAD

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CORPUS = Path(targets.__file__).resolve().parent / "corpus"
NAMES = sorted(targets.DECODERS)


def _genuine_payloads() -> dict[int, list[bytes]]:
    found: dict[int, list[bytes]] = {}
    for data in seeds.seeds()["frames"]:
        frame = data[1:]  # seeds carry a 0 piece-count byte first
        if len(frame) >= 8 and frame[:2] == b"RP":
            found.setdefault(frame[3], []).append(frame[8:])
    return found


GENUINE = _genuine_payloads()
GENUINE_FRAMES = [data[1:] for data in seeds.seeds()["frames"] if data[:1] == b"\x00"]


def _call(name: str, payload: bytes) -> None:
    _type, decoder = targets.DECODERS[name]
    try:
        decoder(payload)
    except targets.EXPECTED:
        pass


def test_registry_covers_every_frame_type_of_every_layer() -> None:
    assert targets.missing_types() == set()
    layers = {targets.layer_of(t) for t, _ in targets.DECODERS.values() if t is not None}
    assert layers == {"link", "e2e", "device", "local", "ops"}


def test_every_registered_type_has_a_genuine_example() -> None:
    typed = {t for t, _ in targets.DECODERS.values() if t is not None}
    assert typed <= set(GENUINE), sorted(typed - set(GENUINE))


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(payload=st.binary(max_size=300))
def test_arbitrary_payload_gives_only_typed_errors(name: str, payload: bytes) -> None:
    _call(name, payload)


@pytest.mark.parametrize("name", [n for n in NAMES if targets.DECODERS[n][0] is not None])
@SETTINGS
@given(data=st.data())
def test_mutated_genuine_payload_gives_only_typed_errors(name: str, data: st.DataObject) -> None:
    type_, _ = targets.DECODERS[name]
    assert type_ is not None
    payload = bytearray(data.draw(st.sampled_from(GENUINE[type_])))
    for _ in range(data.draw(st.integers(1, 3))):
        if payload:
            position = data.draw(st.integers(0, len(payload) - 1))
            payload[position] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(payload) + 2))
    _call(name, bytes(payload[:cut]) + data.draw(st.binary(max_size=3)))


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(st.sampled_from(GENUINE_FRAMES), min_size=1, max_size=6),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=3),
    pieces=st.lists(st.integers(1, 64), min_size=1, max_size=5),
)
def test_mutated_streams_of_every_layer_give_only_typed_errors(
    frames: list[bytes], flips: list[tuple[int, int]], pieces: list[int]
) -> None:
    stream = bytearray(b"".join(frames))
    for position, mask in flips:
        stream[position % len(stream)] ^= mask
    cycle = pieces * (len(stream) // sum(pieces) + 1)
    targets.decode_stream(bytes(stream), cycle, max_payload=MAX_PAYLOAD)


@settings(max_examples=100, deadline=None)
@given(
    selector=st.integers(0, 7),
    plaintexts=st.lists(
        st.one_of(
            st.binary(max_size=120),
            st.sampled_from([m.encode() for m in seeds.op_examples()]).map(
                lambda raw: raw[:-1] + b"\xff" if raw else raw
            ),
            st.sampled_from([m.encode() for m in seeds.op_examples()]),
        ),
        max_size=5,
    ),
)
def test_rogue_peer_with_the_right_rpv_gets_only_typed_refusals(
    selector: int, plaintexts: list[bytes]
) -> None:
    targets.rogue_peer(selector, plaintexts)


@settings(max_examples=150, deadline=None)
@given(
    index=st.integers(0, len(connection_target.CONNECTIONS) - 1),
    frames=st.lists(st.sampled_from(GENUINE_FRAMES), max_size=6),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=2),
)
def test_link_and_device_connections_fed_hostile_peers_give_only_typed_errors(
    index: int, frames: list[bytes], flips: list[tuple[int, int]]
) -> None:
    """The daemons' sans-IO state machines, not only their decoders (they answer like
    their daemon would, so the peer can get past the opening)."""
    stream = bytearray(b"".join(frames))
    for position, mask in flips:
        if stream:
            stream[position % len(stream)] ^= mask
    connection_target.one_connection(bytes([index]) + bytes(stream))


def _corpus() -> list[tuple[str, Path]]:
    return [
        (harness, path)
        for harness in targets.HARNESSES
        if (CORPUS / harness).is_dir()
        for path in sorted((CORPUS / harness).iterdir())
    ]


@pytest.mark.parametrize("harness", sorted(targets.HARNESSES))
def test_kept_fuzz_corpus_replays_with_only_typed_errors(harness: str) -> None:
    inputs = [p for h, p in _corpus() if h == harness]
    assert inputs, f"fuzz/corpus/{harness}/ is empty; run `make fuzz` with FUZZ_MERGE=1"
    assert len(inputs) <= 400  # the kept corpus stays small
    for path in inputs:
        targets.HARNESSES[harness](path.read_bytes())
