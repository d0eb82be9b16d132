"""The seam between the HSM-side API and whatever carries its frames to a PED.

A `FrameTransport` carries end-to-end frames (``ped.wire.types.E2EType``) between one
HSM session and one PED session.  Two implementations exist:

* a local PED: a session opened on a device driver (``ped.device``);
* a remote PED: a link through pedclient and pedserver (``ped.link``).

The PED serves one HSM operation at a time.  Before a handshake or an operation the
HSM side calls `begin_operation`; a PED that is busy with another HSM raises `PedBusy`
(after waiting up to *wait* seconds for it to free up).  `end_operation` releases it.
For a remote PED this lock is held by pedserver, which sees only that an operation
starts and ends, never what it is.

Over a long link each wait for the far end costs a round trip, so a transport that can
(`PipelinesFrames`: a pedclient link of version 3) sends a hold's first frames behind
its request, before the answer (``ped.hsm_api`` does, where a transport can).  A frame
is never lost and never sealed twice: the far end delivers the frames if it grants the
hold, and if the PED is busy none of them reaches it and `PedBusy.undelivered` gives
them back, to be sent again as the same bytes (a sealed frame re-sent unchanged reuses
no nonce: it is the same message).

`TransportError` and its kinds are the path's errors, whoever raises them: always
retriable (a subclass never says otherwise), never a counted failed login.  A relay that
meets one tells its peer DEVICE_GONE (``close_code``); the HSM maps them in
``hsm.apiport``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable

from ped.errors import PedError
from ped.wire.framing import Frame
from ped.wire.types import CloseCode


class TransportError(PedError):
    """The path to the PED failed.  Retriable: never a counted failed login."""

    retriable = True
    #: What pedserver tells the HSM's link when the path to its PED fails.
    close_code: ClassVar[CloseCode] = CloseCode.DEVICE_GONE


class TransportClosed(TransportError):
    """The path to the PED was closed (by either end, or the device went away)."""


class PedBusy(TransportError):
    """The PED is serving another HSM's operation; try again when it is free.

    *undelivered*: the frames pipelined behind this hold's request
    (`PipelinesFrames.begin_operation_with`), none of which reached the PED (send them
    again, unchanged, in a later hold).
    """

    def __init__(self, message: str, *, undelivered: Sequence[Frame] = ()) -> None:
        super().__init__(message)
        self.undelivered: tuple[Frame, ...] = tuple(undelivered)


@runtime_checkable
class FrameTransport(Protocol):
    """What `ped.hsm_api.open_ped_session` needs from the path to a PED.

    Ready-made: ``ped.link.connect_via_pedclient`` (a remote PED) and
    ``ped.device.open_driver(uri)`` then ``driver.open_session()`` (a cabled PED).  An
    HSM with its own way to its PED implements these five methods; the session calls
    them from one task at a time, except `send`, which a `PedSession.cancel` may call
    while another task waits in `receive`.  Failures are `TransportError`s.
    """

    async def send(self, frame: Frame) -> None:
        """Send one end-to-end frame toward the PED."""

    async def receive(self) -> Frame:
        """Next end-to-end frame from the PED; raises `TransportClosed` when gone."""

    async def begin_operation(self, *, wait: float = 0.0) -> None:
        """Take the PED for one handshake or operation; `PedBusy` if not free in *wait* s."""

    async def end_operation(self) -> None:
        """Give the PED back."""

    async def aclose(self) -> None:
        """Close this session; idempotent."""


@runtime_checkable
class PipelinesFrames(Protocol):
    """A transport that can send a hold's first frames with its request (one round trip)."""

    @property
    def pipelines(self) -> bool:
        """Whether this transport pipelines now (a pedclient link: version 3 or later)."""

    async def begin_operation_with(self, frames: Sequence[Frame], *, wait: float = 0.0) -> None:
        """`begin_operation`, with *frames* sent behind the request before its answer.

        The far end delivers them, in order, if it grants the hold; if the PED is busy it
        delivers none of them and this raises `PedBusy` with them as ``undelivered``.
        """

