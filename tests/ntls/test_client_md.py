"""docs/protocol/client.md's test vectors are exactly what the code produces, and decode back."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from ped.errors import FieldOutOfRange
from ped.ntls import messages as m
from ped.ntls.frames import FrameBuffer, decode
from tests.ped.vectors.blocks import document_vectors as read_vectors

from .examples import EXAMPLES, vectors, version_of

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol" / "client.md"


def document_vectors() -> dict[str, str]:
    return read_vectors(DOC)


def test_document_matches_code() -> None:
    assert document_vectors() == vectors()


def test_every_frame_type_and_op_has_a_vector() -> None:
    types = {bytes.fromhex(v)[3] for v in document_vectors().values()}
    assert types == {int(t) for t in m.FrameType}
    requests = {type(e) for e in EXAMPLES.values() if isinstance(e, m.REQUEST_TYPES)}
    assert requests == set(m.REQUEST_TYPES)


def test_vectors_decode_to_the_examples() -> None:
    for name, value in document_vectors().items():
        buffer = FrameBuffer()
        buffer.feed(bytes.fromhex(value))
        frame = buffer.next_frame()
        assert frame is not None and buffer.buffered == 0
        message = decode(*frame, version_of(name))
        expected = EXAMPLES[name]
        assert message == expected, name
        if isinstance(message, m.Login):
            assert isinstance(expected, m.Login)
            assert message.pin == expected.pin
            assert attrs.asdict(message) == attrs.asdict(expected)


def test_the_version_2_vector_is_refused_by_a_version_1_reader() -> None:
    buffer = FrameBuffer()
    buffer.feed(bytes.fromhex(document_vectors()["result_partitions_v2"]))
    frame = buffer.next_frame()
    assert frame is not None
    with pytest.raises(FieldOutOfRange, match="partition flags"):
        decode(*frame, 1)
