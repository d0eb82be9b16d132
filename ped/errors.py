"""The root of the error tree: `PedError`, and the protocol errors every layer shares.

Every exception of the product derives from `PedError` (``keys`` alone has its own root,
``keys.errors.KeyImageError``: it imports nothing of ours).  Each layer keeps its own
errors in its own module (``ped.channel.errors``, ``ped.ops.errors``, ``ped.transport``,
``ped.device.errors``, ``ped.link.errors``, ``ped.tls.errors``, ``hsm.errors``...), whose
docstring says where they are translated for the layer above; ARCHITECTURE.md ("Errors")
draws the tree.

Two families of protocol errors, as in h11 and wsproto:

* ``LocalProtocolError``: *we* misused the API (sent a message in the wrong state,
  passed a value out of range).  A bug on our side; never the peer's fault.
* ``RemoteProtocolError``: the *peer* sent something we cannot accept (a truncated or
  oversize frame, an unknown type, a field out of range).  The connection that carried
  it is finished; every other connection carries on.

A `RemoteProtocolError` carries ``close_code``, the `ped.wire.types.CloseCode` a relay
sends when one ends a link (PROTOCOL_ERROR); the other families that a relay can meet
say theirs too (``ped.transport``, ``ped.device.errors``, ``ped.link.errors``), and
``ped.link.errors.close_code_for`` is the one place a relay reads them.

Messages name what was wrong and what to do.  They never contain secret material:
callers pass lengths, type numbers and field names, never payload bytes.
"""

from __future__ import annotations

from typing import ClassVar

from ped.wire.types import CloseCode


class PedError(Exception):
    """Base of every error raised by the Remote PED packages."""


class LocalProtocolError(PedError):
    """We tried to do something the protocol does not allow in this state."""


class RemoteProtocolError(PedError):
    """The peer sent something the protocol does not allow."""

    #: What a relay tells the peer when this ends a link.
    close_code: ClassVar[CloseCode] = CloseCode.PROTOCOL_ERROR


class FrameError(RemoteProtocolError):
    """A frame on the wire is malformed."""


class TruncatedFrame(FrameError):
    """The stream or buffer ended in the middle of a frame."""


class FrameTooLarge(FrameError):
    """A frame header announced more payload than the hard maximum."""


class BadMagic(FrameError):
    """The bytes do not start with the Remote PED frame magic."""


class UnsupportedVersion(FrameError):
    """The frame carries a protocol version we do not speak."""


class UnknownFrameType(FrameError):
    """The frame type is not one this hop accepts."""


class TrailingBytes(FrameError):
    """Bytes were left over after a complete message."""


class FieldOutOfRange(FrameError):
    """A field decoded but its value is outside the range the protocol allows."""
