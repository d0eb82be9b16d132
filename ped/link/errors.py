"""Errors of the link layer as an HSM (or a relay) sees them.

`LinkClosed` and `ConnectUnavailable` are `ped.transport.TransportError`s, hence
retriable and never a counted failed login: a network or daemon problem is not a wrong
key.  `ConnectRejected` is not: pedclient will never give that link as asked (a bad
request, an incompatible pedserver), so retrying as is cannot help.  Both connect errors
are `ConnectFailed`s, what `connect_via_pedclient` raises.

Translated where: `ped.link.hsm_side` turns what pedclient answers (a `ConnectResult`
code, a `Close`, a lost socket) into these; the HSM turns them into its own errors in
one place, ``hsm.apiport.map_error``.  A relay never raises them to a peer: it sends the
`Close` code `close_code_for` gives.  `LinkEnd` (`end_of_close`) says who ended a link and
why, in an operator's words.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from ped.errors import PedError
from ped.link.messages import RETRIABLE_CONNECT_CODES, ConnectCode
from ped.transport import TransportClosed, TransportError
from ped.wire.types import CloseCode


class ConnectFailed(PedError):
    """pedclient could not (or would not) give us a link; the message says what to check.

    *code* is the `ConnectCode` pedclient answered, or None when pedclient itself could
    not be reached.  Always one of the two kinds below, which say whether a retry may
    succeed (``retriable``).
    """

    retriable: bool

    def __init__(self, message: str, code: ConnectCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class ConnectUnavailable(ConnectFailed, TransportError):
    """No link now (network, daemon state, a busy or absent peer): retry later."""

    retriable = True


class ConnectRejected(ConnectFailed):
    """The request can never succeed as it is (a bad request, an incompatible pedserver)."""

    retriable = False


def connect_failure(message: str, code: ConnectCode | None = None) -> ConnectFailed:
    """The `ConnectFailed` kind for what pedclient answered (*code*, None if unreached)."""
    if code is None or code in RETRIABLE_CONNECT_CODES:
        return ConnectUnavailable(message, code)
    return ConnectRejected(message, code)


class LinkClosed(TransportClosed):
    """The link ended: *code* is the peer's `CloseCode` when it said one, else None.

    Met by pedclient on its link to pedserver, it tells the HSM SERVER_GONE.
    """

    close_code: ClassVar[CloseCode] = CloseCode.SERVER_GONE

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


def close_code_for(error: BaseException) -> CloseCode:
    """The `CloseCode` a relay sends when *error* ends a link: the error's ``close_code``.

    The errors a relay can meet say theirs: a `RemoteProtocolError` PROTOCOL_ERROR, a
    failed path to the PED (a `TransportError`, a ``ped.device`` `DeviceError`)
    DEVICE_GONE, pedclient's lost link to pedserver (`LinkClosed`) SERVER_GONE.  Any
    other error is a protocol error as far as the peer can be told.
    """
    code = getattr(error, "close_code", None)
    return code if isinstance(code, CloseCode) else CloseCode.PROTOCOL_ERROR


@attrs.frozen
class LinkEnd:
    """Who ended a link and why, in an operator's words.

    *by* names the party that closed it ("pedserver", "pedclient", "the PED",
    "this HSM"); *why* is short ("stopped", "idle timeout"); *detail* is the whole
    message the link gave.
    """

    by: str
    why: str
    detail: str

    def sentence(self, target: str) -> str:
        return f"the remote PED link to {target} was closed by {self.by} ({self.why})"


def _named(text: str, default: str) -> str:
    """Which daemon a Close's text names (the relays start their texts with their name)."""
    lowered = text.lower()
    for name in ("pedserver", "pedclient"):
        if lowered.startswith(name) or f"{name} is stopping" in lowered:
            return name
    return default


def end_of_close(code: CloseCode, text: str) -> LinkEnd:
    """Who ended a link that pedclient closed with Close(*code*, *text*) towards the HSM.

    pedclient forwards pedserver's own Close unchanged, so the code and its text say
    whose decision it was; pedclient's own closes (the connection to pedserver lost,
    pedserver silent, pedclient stopping) name pedclient.
    """
    detail = describe_close(code, text)
    if code is CloseCode.SHUTTING_DOWN:
        return LinkEnd(_named(text, "the daemon at the other end"), "stopped", detail)
    if code is CloseCode.IDLE_TIMEOUT:
        return LinkEnd(_named(text, "pedserver"), "idle timeout", detail)
    if code is CloseCode.DEVICE_GONE:
        return LinkEnd("pedserver", "the PED went away (unplugged?)", detail)
    if code is CloseCode.DEVICE_ABSENT:
        return LinkEnd("pedserver", "no PED attached", detail)
    if code is CloseCode.SERVER_GONE:
        return LinkEnd(
            "pedclient", "its connection to pedserver was lost: pedserver stopped or the "
            "network failed", detail,
        )
    if code is CloseCode.PEER_UNRESPONSIVE:
        return LinkEnd(_named(text, "pedclient"), "the other end stopped answering", detail)
    if code is CloseCode.PROTOCOL_ERROR:
        return LinkEnd(_named(text, "pedclient"), "protocol error", detail)
    return LinkEnd(_named(text, "pedclient"), "closed", detail)
