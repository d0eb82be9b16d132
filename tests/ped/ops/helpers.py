"""Shared helpers: a paired HSM-side and PED-side session, pumping frames between them."""

from __future__ import annotations

from ped.channel import PedInfo
from ped.ops import HsmSideSession, PedSideSession
from ped.wire.framing import Frame

RPV = bytes(range(32))
OTHER_RPV = bytes(range(1, 33))
SECRET = bytes([0xA5]) * 32
KEYSET = bytes([0x11]) * 16
SERIAL = "150001"


def make_pair(rpv_hsm: bytes = RPV, **hsm_kwargs: object) -> tuple[HsmSideSession, PedSideSession]:
    hsm = HsmSideSession(rpv=rpv_hsm, hsm_serial=SERIAL, **hsm_kwargs)  # type: ignore[arg-type]
    ped = PedSideSession(ped_info=PedInfo("pedemu", "E-1", "1.0"))
    return hsm, ped


def deliver(hsm: HsmSideSession, frames: list[Frame]) -> list[object]:
    events: list[object] = []
    for frame in frames:
        events.extend(hsm.receive_frame(frame))
    return events


def connected(rpv: bytes = RPV) -> tuple[HsmSideSession, PedSideSession]:
    hsm, ped = make_pair()
    ped.receive_frame(hsm.start_handshake())
    ped.supply_rpv(rpv)
    deliver(hsm, ped.frames_to_send())
    return hsm, ped
