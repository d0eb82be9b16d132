"""Errors of the end-to-end channel.

None of them ever carries key material, an RPV, a PSK or plaintext: only what failed and
what to do about it.

Translated where: the PED side answers a failed handshake with a HANDSHAKE_REFUSED frame
(``ped.ops.ped_side``); the HSM side raises these to the caller of ``ped.hsm_api``
unchanged, and the HSM maps them in one place, ``hsm.apiport.map_error``.
"""

from __future__ import annotations

from ped.errors import LocalProtocolError, PedError, RemoteProtocolError


class ChannelError(PedError):
    """Base of every end-to-end channel error."""


class HandshakeFailed(ChannelError):
    """The handshake did not complete; no channel exists."""


class RpvMismatch(HandshakeFailed):
    """The HSM and the PED do not hold the same Remote PED Vector.

    Raised on the PED when the HSM's first handshake message does not authenticate under
    the RPV read from the orange key, and on the HSM when the PED refuses for that reason
    (or its answer does not authenticate).  A handshake altered in transit looks the same,
    on purpose: the error reveals nothing about either RPV.
    """

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or "the PED and the HSM do not share the same Remote PED Vector: present the "
            "orange key imprinted for this HSM (or the handshake was altered in transit)"
        )


class HandshakeRefused(HandshakeFailed):
    """The PED refused the handshake for a reason other than a wrong RPV.

    ``reason`` is a `ped.channel.handshake.RefuseReason`; ``detail`` is the PED's
    non-secret explanation.
    """

    def __init__(self, reason: int, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        name = getattr(reason, "name", str(reason))
        suffix = f": {detail}" if detail else ""
        super().__init__(f"the PED refused the handshake ({name}){suffix}")


class UnsupportedSuite(HandshakeFailed, RemoteProtocolError):
    """The peer asked for a cipher suite this side does not implement."""


class DecryptFailed(ChannelError, RemoteProtocolError):
    """A sealed message did not authenticate: tampered, replayed, reordered or cut.

    The channel is dead after this; open a new session.
    """


class ChannelClosed(ChannelError, LocalProtocolError):
    """The channel was closed (or failed) and its keys wiped; open a new session."""


class NonceExhausted(ChannelError, LocalProtocolError):
    """The channel sent or received 2**64 - 1 messages; open a new session."""


class MessageTooLarge(ChannelError, LocalProtocolError):
    """A plaintext is over the channel's maximum message size."""
