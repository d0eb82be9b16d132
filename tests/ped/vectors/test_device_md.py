"""docs/protocol/device.md's test vectors are exactly what the code encodes, and decode back."""

from __future__ import annotations

from ped.device.messages import decode_message
from ped.wire.framing import decode_frame

from .blocks import REPO, document_vectors
from .device import DEVICE_EXAMPLES, compute_device

DEVICE_MD = REPO / "docs" / "protocol" / "device.md"


def test_device_document_matches_code() -> None:
    assert document_vectors(DEVICE_MD) == compute_device()


def test_device_vectors_decode_to_their_messages() -> None:
    for name, value in document_vectors(DEVICE_MD).items():
        assert decode_message(decode_frame(bytes.fromhex(value))) == DEVICE_EXAMPLES[name], name


def test_nothing_is_elided() -> None:
    text = DEVICE_MD.read_text(encoding="utf-8")
    section = text[text.index("### Test vectors") : text.index("## 4. Byte streams")]
    assert "..." not in section


def test_the_documented_reopen_interval() -> None:
    from pedserver.device import DEVICE_RETRY_INTERVAL

    text = " ".join(DEVICE_MD.read_text(encoding="utf-8").split())
    assert DEVICE_RETRY_INTERVAL == 5.0
    assert "then every 5 s while it is absent (`pedserver.device.DEVICE_RETRY_INTERVAL`)" in text
