"""Errors of the link layer as an HSM (or a relay) sees them.

All are `ped.transport.TransportError`s, hence retriable and never a counted failed
login: a network or daemon problem is not a wrong key.
"""

from __future__ import annotations

from ped.link.messages import RETRIABLE_CONNECT_CODES, CloseCode, ConnectCode
from ped.transport import TransportClosed, TransportError


class ConnectFailed(TransportError):
    """pedclient could not (or would not) give us a link; the message says what to check.

    *code* is the `ConnectCode` pedclient answered, or None when pedclient itself could
    not be reached.  ``retriable`` is False only for requests that can never succeed as
    they are (a bad request, an incompatible pedserver).
    """

    def __init__(self, message: str, code: ConnectCode | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retriable = code is None or code in RETRIABLE_CONNECT_CODES


class LinkClosed(TransportClosed):
    """The link ended: *code* is the peer's `CloseCode` when it said one, else None."""

    def __init__(self, message: str, code: CloseCode | None = None) -> None:
        super().__init__(message)
        self.code = code


#: What to tell a person for each close code (the peer's own text is appended).
CLOSE_ADVICE: dict[CloseCode, str] = {
    CloseCode.NORMAL: "the link was closed",
    CloseCode.IDLE_TIMEOUT: "the link was idle too long; connect again",
    CloseCode.SHUTTING_DOWN: "the daemon at the other end is stopping; connect again later",
    CloseCode.PROTOCOL_ERROR: "the other end reported a protocol error",
    CloseCode.PEER_UNRESPONSIVE: "the other end stopped answering (network loss?)",
    CloseCode.DEVICE_GONE: "the PED went away (unplugged?); check it and connect again",
    CloseCode.DEVICE_ABSENT: "no PED is attached to pedserver; attach it and retry",
    CloseCode.SERVER_GONE: "the connection to pedserver was lost mid-way; retry",
}


def describe_close(code: CloseCode, text: str) -> str:
    advice = CLOSE_ADVICE.get(code, "the link was closed")
    return f"{advice} ({text})" if text else advice
