"""What both ends of a Remote PED session share (the HSM's and the PED's).

Each end is a state machine over its own table (``TRANSITIONS``: (state, input) -> next
state) with at most one operation outstanding (``current``).  This base walks the table,
wipes the outstanding request (an imprint carries a new secret) and the channel keys,
and gives the one-line repr; `ped.ops.hsm_side` and `ped.ops.ped_side` keep the rules
that differ.  Nothing here holds or prints a secret.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, ClassVar

from ped.channel.secure import SecureChannel
from ped.errors import LocalProtocolError, RemoteProtocolError
from ped.ops.messages import ImprintRequest, ReadSecret, ShowMessage

Request = ReadSecret | ImprintRequest | ShowMessage


class SessionBase:
    """The table walk, the outstanding request and the channel of one session end."""

    #: (state, input) -> next state; set by each end.
    TRANSITIONS: ClassVar[Mapping[tuple[Any, str], Any]]
    #: Which end this is, in error messages ("HSM" or "PED").
    SIDE: ClassVar[str]

    state: enum.Enum
    hsm_serial: str | None
    current: Request | None
    _channel: SecureChannel | None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(state={self.state.value}, "
                f"hsm_serial={self.hsm_serial!r}, op={self.current_op_id})")

    @property
    def current_op_id(self) -> int | None:
        """The id of the outstanding operation, if any."""
        return self.current.op_id if self.current is not None else None

    def _advance(self, what: str, *, remote: bool) -> None:
        nxt = self.TRANSITIONS.get((self.state, what))
        if nxt is None:
            cls = RemoteProtocolError if remote else LocalProtocolError
            raise cls(f"{what!r} is not allowed in {self.SIDE} session state "
                      f"{self.state.value!r}")
        self.state = nxt

    def _drop_current(self) -> None:
        """Forget the outstanding request, wiping an imprint's new secret."""
        if isinstance(self.current, ImprintRequest):
            self.current.wipe()
        self.current = None

    def _wipe(self) -> None:
        """Close the channel (wiping its keys) and drop the outstanding request."""
        if self._channel is not None:
            self._channel.close()
        self._drop_current()


def printable(text: str) -> str:
    """Text from the other end, with anything unprintable shown as '?'."""
    return "".join(c if c.isprintable() else "?" for c in text)
