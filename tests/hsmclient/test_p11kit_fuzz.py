"""The p11-kit fuzz harness's target, replayed on its kept corpus and driven by hypothesis:
hostile client streams give typed errors or answers, never anything else."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import p11kit_target

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus" / "p11kit"


def test_the_kept_corpus_replays() -> None:
    inputs = sorted(CORPUS.iterdir())
    assert inputs, "fuzz/corpus/p11kit/ is empty: python -c 'from fuzz import p11kit_target...'"
    for path in inputs:
        p11kit_target.one_p11kit_stream(path.read_bytes())


@pytest.mark.parametrize("seed", range(len(p11kit_target.seeds())))
def test_every_seed_runs(seed: int) -> None:
    p11kit_target.one_p11kit_stream(p11kit_target.seeds()[seed])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(p11kit_target.seeds()), st.data())
def test_mutated_streams_only_give_typed_errors(seed: bytes, data: st.DataObject) -> None:
    raw = bytearray(seed)
    for _ in range(data.draw(st.integers(0, 6))):
        index = data.draw(st.integers(1, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)))
    p11kit_target.one_p11kit_stream(bytes(raw[:cut]))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_random_streams_only_give_typed_errors(data: bytes) -> None:
    p11kit_target.one_p11kit_stream(data)
