"""Errors of the cloning protocol, local (we misused it) or remote (the peer broke it).

None carries a domain secret, a PSK, an object's value or its attributes: only what
failed, the domains' fingerprints (`ped.cloning.handshake.domain_fingerprint`, public)
and what to do about it.
"""

from __future__ import annotations

from ped.errors import LocalProtocolError, PedError, RemoteProtocolError


class CloningError(PedError):
    """Base of every cloning error."""


class DomainMismatch(CloningError):
    """The two partitions are not in the same cloning domain: refused at the handshake.

    Raised on the side that finds out (the target, whose key does not open the source's
    first message) and on the other side when the refusal arrives.  *ours* and *theirs*
    are fingerprints (never the secret); *theirs* is empty when the peer did not say.
    """

    def __init__(self, ours: str, theirs: str = "") -> None:
        self.ours = ours
        self.theirs = theirs
        peer = f"the other partition's is {theirs}" if theirs else "the other partition's differs"
        super().__init__(
            f"the partitions are in different cloning domains (this partition's domain is "
            f"{ours}, {peer}): nothing was sent or created; initialise the target partition "
            "from the source's red key set (`partition init --domain-from-red-key`)"
        )


class CloneRefused(CloningError):
    """The peer refused the handshake for another reason than the domain (busy, policy...)."""

    def __init__(self, reason: int, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        name = getattr(reason, "name", str(reason))
        suffix = f": {detail}" if detail else ""
        super().__init__(f"the other HSM refused to clone ({name}){suffix}")


class CloneProtocolError(CloningError, RemoteProtocolError):
    """The peer sent a frame or a field the cloning protocol does not allow here."""


class CloneAuthFailed(CloneProtocolError):
    """A sealed cloning frame did not authenticate (tampered, replayed, reordered, cut)."""


class CloneIncomplete(CloneProtocolError):
    """The end marker does not match what arrived (count or digest): nothing is stored."""


class CloneMisuse(CloningError, LocalProtocolError):
    """This side called the protocol out of order or with out-of-range values."""


class CloneRejected(CloningError):
    """The target checked the objects and did not store them; its reason is in the text."""
