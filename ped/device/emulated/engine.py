"""The emulated PED's operations, one at a time: read, imprint, show, local connect.

Theory of operation
-------------------
`PedEngine` is what a PED's firmware does between the end-to-end channel (which tells
it what the HSM wants) and the front panel (``panel.py``: screen, keypad, key slot).
Each operation runs as one `OperationDialog` (``dialog.py``) with the operator: it shows
a prompt, waits for the operator with the PED-key timeout, reacts, and finally returns a
result or raises one of ``ped.ops.errors``.  The flows themselves have their modules:

* **read** (``read_flow.py``): the role's keys until M shares are in, the PED PIN;
* **imprint** (``imprint_flow.py``): the four questions, then the new keys on blanks;
* **show**: a message on the screen;
* **local connect** (`ask_local_rpv`): may a local HSM connect without an orange key?

The read and imprint flows report their progress through ``notify`` (the session sends
it to the HSM as NOTICEs); the handshake's orange-key read has no HSM operation to
report to and notifies nobody.

Waiting for the operator is bounded by the key timeout (`KeyTimeout`); CLR on an empty
entry cancels (`OperationCancelled`); the HSM cancels by cancelling the calling task.
One operation at a time (`busy`; another session's request gets `PedBusy`).  Secrets
exist only in bytearrays that are wiped; the PIN is a str because ``keys`` takes one,
and is dropped at once.  Every step emits a non-secret `ped.device.messages.DeviceEvent`
through ``emit`` for the host's log, between the operation's OP_STARTED and OP_FINISHED.
The OP_STARTED line ("session 2: op-started blue read-secret") is logged when the
operation first asks for input: at info level when it has to wait for the operator
(whoever watches pedemu's own log learns that the PED waits for them), at debug level
when the answer is already queued (the ``auto`` operator: no log line per login).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator

import trio

from keys.colors import Color
from ped.device.emulated import imprint_flow, read_flow
from ped.device.emulated.dialog import Emit, Notify, OperationDialog, Unplugged, no_notify
from ped.device.emulated.imprint_flow import ImprintOutcome
from ped.device.emulated.panel import Panel, Prompt, PromptKind
from ped.device.emulated.read_flow import ReadOutcome
from ped.device.messages import DeviceEvent, EventKind
from ped.ops import errors as operr
from ped.transport import PedBusy

DEFAULT_KEY_TIMEOUT = 200.0


def _no_emit(_event: DeviceEvent) -> None:
    return None


class PedEngine:
    """See the module docstring."""

    def __init__(self, panel: Panel, *, key_timeout: float = DEFAULT_KEY_TIMEOUT) -> None:
        self.panel = panel
        self.key_timeout = key_timeout
        self._lock = trio.Lock()
        self._ops = itertools.count(1)

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    # ---------------------------------------------------------------- public operations
    async def read_secret(
        self,
        color: Color,
        keyset_id: bytes | None = None,
        label: str = "",
        *,
        key_timeout: float | None = None,
        session: int = 0,
        emit: Emit = _no_emit,
        notify: Notify = no_notify,
    ) -> ReadOutcome:
        async with self._operation(
            session, emit, "read-secret", color, key_timeout, notify
        ) as dialog:
            return await read_flow.read_secret(dialog, color, keyset_id, label)

    async def imprint(
        self,
        color: Color,
        label: str = "",
        *,
        new_secret: bytes | bytearray | None = None,
        allow_reuse: bool = False,
        key_timeout: float | None = None,
        session: int = 0,
        emit: Emit = _no_emit,
        notify: Notify = no_notify,
    ) -> ImprintOutcome:
        if new_secret is None and not allow_reuse:
            raise operr.BadRequest("an imprint needs a new secret or reuse allowed")
        label = imprint_flow.key_label(label, color)
        async with self._operation(session, emit, "imprint", color, key_timeout, notify) as dialog:
            return await imprint_flow.imprint(dialog, color, label, new_secret, allow_reuse)

    async def show(self, text: str, *, session: int = 0, emit: Emit = _no_emit) -> None:
        async with self._operation(session, emit, "show", None, None):
            self.panel.show(text.splitlines() or [""])

    async def ask_local_rpv(self, *, session: int = 0, emit: Emit = _no_emit) -> bool:
        """Local mode: may this HSM connect without an orange key?  YES: use the public
        local RPV; NO: read the orange key as in remote mode; CLR: refuse."""
        async with self._operation(session, emit, "local-connect", None, None) as dialog:
            lines = ["HSM connecting locally.", "Without an orange key?", "YES / NO (orange key)"]
            prompt = Prompt(PromptKind.YES_NO, question="rpv-local", op=dialog.op)
            return await dialog.yes_no(lines, prompt)

    async def ask_password(
        self,
        hsm_serial: str,
        digits: int,
        *,
        key_timeout: float | None = None,
        session: int = 0,
        emit: Emit = _no_emit,
    ) -> bytearray:
        """Remote RPV initialisation: the one-time password the HSM shows, typed on the
        keypad (*digits* long, asked again until it is; CLR on an empty entry cancels)."""
        async with self._operation(
            session, emit, "rpv-password", Color.ORANGE, key_timeout
        ) as dialog:
            prompt = Prompt(PromptKind.PASSWORD, label="one-time password",
                            question=hsm_serial, low=digits, high=digits, op=dialog.op)
            lines = [f"HSM {hsm_serial}", "initialises its RPV.",
                     f"Type the {digits}-digit", "one-time password:"]
            while True:
                typed = await dialog.digits(lines, prompt, allow_empty=False)
                if len(typed) == digits:
                    return bytearray(typed.encode("ascii"))
                lines = [f"Need {digits} digits.", *lines[-2:]]

    # --------------------------------------------------------------------- machinery
    @contextlib.asynccontextmanager
    async def _operation(
        self,
        session: int,
        emit: Emit,
        name: str,
        color: Color | None,
        key_timeout: float | None,
        notify: Notify = no_notify,
    ) -> AsyncIterator[OperationDialog]:
        if self.panel.unplugged.is_set():
            raise Unplugged()
        if self._lock.locked():
            # Another session's operation holds the PED (the host's PED lock should have
            # prevented this): answer BUSY rather than queue behind it.
            raise PedBusy("the PED is busy with another operation")
        # Free (just checked): take it without a schedule point, honouring a cancellation.
        await trio.lowlevel.checkpoint_if_cancelled()
        self._lock.acquire_nowait()
        outcome = "error"
        dialog: OperationDialog | None = None
        try:
            op = next(self._ops)
            self.panel.drain()
            started = DeviceEvent(session, EventKind.OP_STARTED, int(color or 0), detail=name)
            dialog = OperationDialog(
                self.panel,
                op=op,
                timeout=self.key_timeout if key_timeout is None else key_timeout,
                session=session,
                emit=emit,
                started=started,
                notify=notify,
            )
            emit(started)
            try:
                yield dialog
            except BaseException as exc:
                outcome = outcome_word(exc)
                raise
            else:
                outcome = "ok"
        finally:
            try:
                if dialog is not None:
                    dialog.log_started(waiting=False)  # if it never asked for input
                emit(
                    DeviceEvent(
                        session,
                        EventKind.OP_FINISHED,
                        int(color or 0),
                        outcome=outcome,
                        detail=name,
                    )
                )
                if outcome != "unplugged" and name != "show":
                    self.panel.idle()
            finally:
                self._lock.release()


def outcome_word(exc: BaseException) -> str:
    """OP_FINISHED's outcome word for an operation that ended with *exc* (device.md)."""
    if isinstance(exc, Unplugged):
        return "unplugged"
    if isinstance(exc, operr.WrongColor):
        return "wrong-colour"  # one spelling, KEY_REFUSED's (the code's name is WRONG_COLOR)
    if isinstance(exc, operr.OperationError) and exc.code is not None:
        return exc.code.name.lower().replace("_", "-")
    if isinstance(exc, trio.Cancelled):
        return "cancelled"
    return "error"


__all__ = ["DEFAULT_KEY_TIMEOUT", "PedEngine"]
