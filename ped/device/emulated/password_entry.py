"""A remote RPV initialisation on the emulated PED: the one-time password, the PAKE.

Theory of operation
-------------------
An HSM without an RPV opens its session with PAKE_INIT (``ped.pake``) instead of
HANDSHAKE_INIT.  `PasswordEntry` is that session's side of it: it parses PAKE_INIT
(`start`; a malformed one is refused in the clear, UNSUPPORTED), asks the operator for
the password the HSM shows (`entry`, `PedEngine.ask_password`: the HSM's serial and the
number of digits on the screen, the digits as stars), answers PAKE_RESPONSE and keeps
the channel key.  The HANDSHAKE_INIT that follows (`handshake`) is then keyed by that key
in place of an orange key's RPV, for the same HSM only; a wrong password fails it exactly
as a wrong orange key would (the HSM learns RPV_MISMATCH), and the screen says so.  A
cancel (CLR), a timeout or a busy PED answers HANDSHAKE_REFUSED, which costs the HSM no
try.  The key is wiped once supplied; the typed digits as soon as the share is made.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from keys.colors import Color
from ped.channel.handshake import RefuseReason
from ped.device.emulated.dialog import Unplugged
from ped.device.messages import DeviceEvent, EventKind, SessionData
from ped.errors import PedError
from ped.ops import errors as operr
from ped.ops import events as ev
from ped.pake.handshake import PakeResponder
from ped.pake.messages import PakeInit
from ped.transport import PedBusy
from ped.wire.framing import Frame

if TYPE_CHECKING:
    from ped.device.emulated.session import EmulatedSession

log = logging.getLogger("pedemu")

#: What the PED refuses a handshake with, by the error that stopped the operator's part.
REFUSALS: dict[type[BaseException], RefuseReason] = {
    operr.KeyTimeout: RefuseReason.KEY_TIMEOUT,
    operr.OperationCancelled: RefuseReason.CANCELLED,
    PedBusy: RefuseReason.BUSY,
}


class PasswordEntry:
    """See the module docstring."""

    def __init__(self, session: EmulatedSession) -> None:
        self.session = session
        self.responder = PakeResponder()
        self.key: bytearray | None = None  # the channel key, until the handshake

    def start(self, frame: Frame) -> PakeInit | None:
        """Parse PAKE_INIT; None (and the refusal sent) when it is malformed."""
        s = self.session
        try:
            return self.responder.receive_init(frame)
        except PedError as exc:
            log.info("session %d: malformed PAKE_INIT: %s", s.id, exc)
            self._send(self.responder.refuse(RefuseReason.UNSUPPORTED, "malformed PAKE_INIT"))
            s.end()
            return None

    async def entry(self, init: PakeInit) -> None:
        """The operator types the password; PAKE_RESPONSE goes back (or a refusal)."""
        s = self.session
        try:
            password = await s.engine.ask_password(
                init.hsm_serial, init.digits, key_timeout=init.entry_timeout_ms / 1000,
                session=s.id, emit=s.emit,
            )
        except (operr.OperationError, PedBusy, Unplugged) as exc:
            reason = REFUSALS.get(type(exc), RefuseReason.DEVICE_ERROR)
            self._send(self.responder.refuse(reason, str(exc)[:200]))
            self._event(reason.name.lower().replace("_", "-"), init.hsm_serial)
            s.end()
            return
        try:
            frame, key = self.responder.answer(password)
        except PedError as exc:
            log.info("session %d: PAKE failed: %s", s.id, exc)
            self._send(self.responder.refuse(RefuseReason.UNSUPPORTED, "bad PAKE share"))
            s.end()
            return
        finally:
            password[:] = bytes(len(password))
        self.key = key
        self._send(frame)

    def handshake(self, event: ev.RpvRequired) -> None:
        """The handshake after the PAKE: keyed by its channel key, for that HSM only."""
        s = self.session
        init = self.responder.init
        key, self.key = self.key, None
        serial = init.hsm_serial if init is not None else "?"
        if key is None or event.hsm_serial != serial:
            if key is not None:
                key[:] = bytes(len(key))
            s.side.refuse(RefuseReason.UNSUPPORTED, "handshake does not follow its PAKE")
            s.flush()
            return
        try:
            result = s.side.supply_rpv(key)
        finally:
            key[:] = bytes(len(key))
        ok = isinstance(result, ev.ChannelEstablished)
        self._event("ok" if ok else "wrong-password", serial)
        if not ok:
            s.engine.panel.show(["Wrong one-time password.", "Nothing was imprinted.",
                                 f"HSM {serial} may try again."])
        s.flush()

    def wipe(self) -> None:
        if self.key is not None:
            self.key[:] = bytes(len(self.key))
            self.key = None

    def _send(self, frame: Frame) -> None:
        s = self.session
        if s.host.is_current(s):
            s.host.send(SessionData(s.id, frame))

    def _event(self, outcome: str, hsm_serial: str) -> None:
        s = self.session
        s.emit(DeviceEvent(s.id, EventKind.HANDSHAKE, int(Color.ORANGE), outcome=outcome,
                           detail=f"hsm {hsm_serial} one-time password"))
