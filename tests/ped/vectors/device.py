"""Compute docs/protocol/device.md's test vectors (device transport frames) from the code.

``python -m tests.ped.vectors.device`` prints them in the ```vectors format the document uses.
"""

from __future__ import annotations

from ped.device.messages import (
    DeviceErrorCode,
    DeviceErrorMessage,
    DeviceEvent,
    DeviceMessage,
    EventKind,
    Hello,
    Info,
    Ping,
    Pong,
    SessionClose,
    SessionCloseReason,
    SessionData,
    SessionOpen,
    SessionOpened,
    encode_message,
)
from ped.wire.framing import Frame

#: The documented examples, in document order: vector name -> message.
DEVICE_EXAMPLES: dict[str, DeviceMessage] = {
    "device_hello": Hello(1, 1, "ws1"),
    "device_info": Info(1, "pedemu", "1.0.0", "EMU-0001", "remote", 16),
    "device_session_open": SessionOpen(1),
    "device_session_opened": SessionOpened(1),
    "device_session_close": SessionClose(1, SessionCloseReason.NORMAL, ""),
    "device_session_data": SessionData(1, Frame(0x20, b"\x00\x00\x00\x00")),
    "device_event_key_read": DeviceEvent(1, EventKind.KEY_READ, 1, "00" * 16, "ok", "key 1 of 2"),
    "device_error_busy": DeviceErrorMessage(DeviceErrorCode.BUSY, "busy"),
    "device_ping": Ping(1),
    "device_pong": Pong(1),
}


def compute_device() -> dict[str, str]:
    """Every device.md vector, as lower-case hex of the whole frame."""
    return {name: encode_message(message).hex() for name, message in DEVICE_EXAMPLES.items()}


if __name__ == "__main__":
    print("```vectors")
    for name, value in compute_device().items():
        print(f"{name} = {value}")
    print("```")
