"""The one table from errors to the Close code a relay sends (`close_code_for`)."""

from __future__ import annotations

import pytest

from ped.device.errors import DeviceGone, DeviceNotFound
from ped.errors import FrameTooLarge, LocalProtocolError, RemoteProtocolError
from ped.link.errors import LinkClosed, close_code_for
from ped.transport import PedBusy, TransportClosed
from ped.wire.types import CloseCode


@pytest.mark.parametrize(
    "error, code",
    [
        (RemoteProtocolError("garbage"), CloseCode.PROTOCOL_ERROR),
        (FrameTooLarge("too big"), CloseCode.PROTOCOL_ERROR),
        (TransportClosed("session ended"), CloseCode.DEVICE_GONE),
        (DeviceGone("unplugged"), CloseCode.DEVICE_GONE),
        (DeviceNotFound("no PED"), CloseCode.DEVICE_GONE),
        (PedBusy("busy"), CloseCode.DEVICE_GONE),
        (LinkClosed("pedserver lost"), CloseCode.SERVER_GONE),
        (LocalProtocolError("nothing to name"), CloseCode.PROTOCOL_ERROR),
    ],
    ids=lambda value: type(value).__name__,
)
def test_each_error_says_its_close_code(error: Exception, code: CloseCode) -> None:
    assert close_code_for(error) is code


def test_the_peers_code_is_not_ours() -> None:
    """`LinkClosed.code` is what the peer said; `close_code` what a relay says onward."""
    closed = LinkClosed("idle", CloseCode.IDLE_TIMEOUT)
    assert closed.code is CloseCode.IDLE_TIMEOUT
    assert close_code_for(closed) is CloseCode.SERVER_GONE
