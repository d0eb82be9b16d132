"""Why a `PedSession` can no longer be used, in an operator's words (`session_end`).

An HSM that keeps a session open between operations (pedhsm keeps its remote PED's for
months) must know the moment it dies, not at its next operation: a frame that failed
authentication (`DecryptFailed`: tampered or corrupted on the way, replayed, reordered),
an answer that breaks the protocol, a path that closed, an operation the PED never ended
after this side gave it up (its own timeout, or the caller's task cancelled: a command
whose shell went away).  After any of these the session is finished (PROTOCOL.md 3.6:
the channel's keys are wiped and nothing more is sent on it); a new session is a new
handshake, the orange key again.  The words say what failed, never a value: the errors
they quote carry no key material by design (``ped.channel.errors``).
"""

from __future__ import annotations

import attrs
import trio

from ped.channel.errors import DecryptFailed
from ped.errors import RemoteProtocolError
from ped.hsm_api.session import PedSession
from ped.ops.errors import OperationError
from ped.transport import TransportError

#: How every end of the secure channel itself begins its short reason.
CHANNEL_BROKEN = "secure channel broken"


@attrs.frozen
class SessionEnd:
    """Why a session ended: *why* is short ("secure channel broken: ..."), *detail* the
    whole story (what failed, and the error the failed operation met)."""

    why: str
    detail: str


def session_end(session: PedSession, error: BaseException | None = None) -> SessionEnd | None:
    """None while *session* can still be used; else why it cannot, read from *error*
    (what its last operation raised; None when unknown)."""
    if session.usable:
        return None
    if isinstance(error, trio.Cancelled):  # says nothing of its own
        return SessionEnd(
            "the PED did not end an abandoned operation",
            "the task running an operation on the PED was cancelled (a command whose "
            "client went away) and the PED did not end the operation when told to",
        )
    said = f": {error}" if error is not None and str(error) else ""
    if isinstance(error, DecryptFailed):
        return SessionEnd(
            f"{CHANNEL_BROKEN}: a frame failed authentication",
            f"a frame from the PED was tampered with or corrupted on the way{said}",
        )
    if isinstance(error, RemoteProtocolError):
        return SessionEnd(
            f"{CHANNEL_BROKEN}: an answer broke the protocol",
            f"the PED's answer broke the protocol (garbage, or out of order){said}",
        )
    if isinstance(error, TransportError):
        return SessionEnd("the path to the PED failed", f"the path to the PED failed{said}")
    if isinstance(error, OperationError):
        return SessionEnd(
            "the PED did not end an operation",
            f"the PED did not end an operation this side gave up on{said}",
        )
    return SessionEnd(
        "session broken", f"the PED session can no longer be used{said or ' (cause unknown)'}"
    )
