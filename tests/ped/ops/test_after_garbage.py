"""PROTOCOL.md 3.6: after a decrypt failure or garbage in an established session the PED
sends nothing at all on it (issue 19, 4.5)."""

from __future__ import annotations

import pytest

from keys.colors import Color
from ped.ops import PedState
from ped.ops import events as ev
from ped.wire.framing import Frame

from .helpers import connected


@pytest.mark.parametrize("operation_running", [False, True])
@pytest.mark.parametrize(
    "garbage",
    [
        Frame(0x23, b"\x00" * 560),  # a SEALED frame that does not authenticate
        Frame(0x23, b"\x01"),  # a SEALED payload of an impossible size
        Frame(0x20, b"\x02"),  # a handshake frame inside a session
        Frame(0x21, b""),
    ],
)
def test_the_ped_sends_nothing_after_garbage(operation_running: bool, garbage: Frame) -> None:
    hsm, ped = connected()
    if operation_running:
        ped.receive_frame(hsm.read_secret(Color.BLUE))
        ped.frames_to_send()
    events = ped.receive_frame(garbage)
    assert any(isinstance(e, ev.SessionFailed) for e in events)
    assert ped.state is PedState.FAILED
    assert ped.frames_to_send() == []
