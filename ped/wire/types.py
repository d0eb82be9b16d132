"""Frame type numbers, one range per layer, so every hop can say what it accepts.

Ranges (documented in PROTOCOL.md):

* 0x01-0x1F  link layer, pedclient <-> pedserver (and relayed to the HSM): ``ped.link``
* 0x20-0x2F  end-to-end layer, HSM <-> PED, opaque to relays: ``ped.channel``
* 0x30-0x3F  device transport, pedserver or a local HSM <-> PED device: ``ped.device``
* 0x40-0x4F  local endpoint, HSM <-> pedclient on the HSM host: ``ped.link``
* 0x50-0x6F  PED operations, only ever *inside* a sealed end-to-end frame: ``ped.ops``
* 0x70-0x77  client protocol, hsmclient <-> pedhsm inside pinned TLS (port 1792): ``ped.ntls``
* 0x78-0x7F  cloning, HSM <-> HSM partition of one cloning domain, relayed by hsmclient as
  opaque bytes: ``ped.cloning``

The relays (pedserver, pedclient) only ever look at the type byte of a 0x20-0x2F frame,
never inside it.
"""

from __future__ import annotations

from enum import IntEnum


class E2EType(IntEnum):
    """End-to-end frames between the HSM and the PED (relayed as opaque bytes)."""

    HANDSHAKE_INIT = 0x20
    HANDSHAKE_RESPONSE = 0x21
    HANDSHAKE_REFUSED = 0x22
    SEALED = 0x23
    PAKE_INIT = 0x24  # remote RPV initialisation: the HSM's CPace share (ped.pake)
    PAKE_RESPONSE = 0x25  # the PED's CPace share


LINK_RANGE = range(0x01, 0x20)
E2E_RANGE = range(0x20, 0x30)
DEVICE_RANGE = range(0x30, 0x40)
LOCAL_RANGE = range(0x40, 0x50)
OPS_RANGE = range(0x50, 0x70)

E2E_TYPES = frozenset(int(t) for t in E2EType)



class OpType(IntEnum):
    """PED operation messages: the plaintext inside a SEALED frame is one of these frames."""

    READ_SECRET = 0x50
    READ_RESULT = 0x51
    IMPRINT = 0x52
    IMPRINT_RESULT = 0x53
    SHOW_MESSAGE = 0x54
    SHOW_DONE = 0x55
    CANCEL = 0x56
    NOTICE = 0x57
    OP_ERROR = 0x58
    GOODBYE = 0x5F


OPS_TYPES = frozenset(int(t) for t in OpType)


class CloseCode(IntEnum):
    """Why a link ends: the code of the link layer's ``Close`` (0x0A, docs/protocol/link.md).

    Here, below every layer, because errors carry the code a relay sends when one of them
    ends a link (``close_code``, read by ``ped.link.errors.close_code_for``).
    """

    NORMAL = 0  # the sender is done with the link
    IDLE_TIMEOUT = 1  # no PED operation for the idle timeout
    SHUTTING_DOWN = 2  # the sender's daemon is stopping (SIGTERM, mode stop)
    PROTOCOL_ERROR = 3  # the peer broke the protocol
    PEER_UNRESPONSIVE = 4  # nothing heard from the peer within the read timeout
    DEVICE_GONE = 5  # the PED was unplugged or its process ended
    DEVICE_ABSENT = 6  # no PED is attached to pedserver
    SERVER_GONE = 7  # (pedclient -> HSM) the connection to pedserver was lost
