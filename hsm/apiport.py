"""The HSM's `hsm.pedport.PedPort` over an open ``ped.hsm_api`` session.

This module is the one place the HSM turns errors of ``ped`` into its own (see
`hsm.pedport`): wrong colour -> `WrongKeyColor` (not counted), keyset mismatch ->
`WrongKeyset` (counted), a PED busy with another HSM's operation -> `PedBusyRefusal` (not
counted; a held session stays usable, so the remote link stays), everything else
(timeouts, cancel, transport failures, a rejected connect, RPV mismatch) ->
`PedUnavailable` (not counted; a closed remote link advises `hsm ped connect`, not
"retry"); a driver that cannot
be opened or used -> `PedUnavailable` too (`driver_unavailable`).  ``hsm.pedlink`` calls
these; nothing else in the HSM catches an error of ``ped`` to make an HSM error.
PED progress notices become lines for the shell (`describe_notice`); before each
operation the port announces what it asks of the PED (which colour, for whom, the pedk
timeout), so the host shows progress even from a PED that sends no notices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hsm.errors import PedUnavailable
from hsm.pedport import PedSecret, WrongKeyColor, WrongKeyset
from keys.colors import Color
from ped.channel.errors import RpvMismatch
from ped.errors import PedError
from ped.link.errors import ConnectRejected, LinkClosed
from ped.transport import PedBusy, TransportError


class PedLinkLost(PedUnavailable):
    """The path to the PED failed (a transport error): retriable, never counted."""


class PedBusyRefusal(PedUnavailable):
    """The PED serves another HSM's operation: refused, never counted.  Nothing reached
    the PED, and a session the HSM holds stays usable (``ped.transport.PedBusy``)."""


def busy_refusal(
    exc: PedBusy, where: str, *, waited: float | None, link_stays: bool
) -> PedBusyRefusal:
    """The refusal for a PED that stayed busy: how long this HSM waited (when known), that
    nothing was counted, whether the link stays, and where to see who holds the PED.  The
    PED side's words (e.g. pedserver's "held by link 3 from A (name)") come last."""
    waited_text = f"; this HSM waited {waited:g} s for it" if waited else ""
    stays = "the link stays connected: " if link_stays else ""
    # Only a remote PED has a pedserver to ask who holds it.
    holder = ("" if where.startswith("local PED") else "; `pedserver mode show` on the "
              "PED's workstation shows which link holds it")
    return PedBusyRefusal(
        f"the PED at {where} is busy with another HSM's operation{waited_text} (not counted; "
        f"{stays}retry when the PED is free{holder}). The PED side said: {exc}",
        outcome="ped-busy",  # the audit word of this refusal (`hsm.logins`)
    )


def map_error(
    exc: BaseException, where: str, *, waited: float | None = None, link_stays: bool = False
) -> BaseException:
    """Turn a ``ped`` error into what the HSM understands (see the module docstring).

    *waited*: how long the session waited for a busy PED (its ``busy_wait``), if known;
    *link_stays*: the session outlives the command (a held remote link), so a busy PED
    leaves the link connected."""
    from ped.ops import errors as op_errors

    if isinstance(exc, op_errors.WrongColor):
        return WrongKeyColor(f"login refused, not counted: {exc}")
    if isinstance(exc, op_errors.KeysetMismatch):
        return WrongKeyset(str(exc))
    if isinstance(exc, RpvMismatch):
        # The HSM cannot tell a wrong orange key from a handshake altered or replayed on
        # the network: say both, and never advise replacing the RPV in answer to it.
        return PedUnavailable(
            f"the PED at {where} did not prove it holds this HSM's RPV (not counted). "
            "Either the orange key presented there does not hold this HSM's Remote PED "
            "Vector (RPV): present the right orange key; or the handshake was altered or "
            "replayed on its way (a network attack or a faulty relay): check the path to "
            "pedserver and its log for handshakes you did not start. Do not re-initialise "
            "the RPV in answer to this"
        )
    if isinstance(exc, ConnectRejected):
        # pedclient will never give this link as asked (a bad request, an incompatible
        # pedserver): not counted, and "retry" would be wrong advice; the message of the
        # rejection says what to change.
        return PedUnavailable(f"the PED at {where} is unavailable: {exc} (not counted)")
    if isinstance(exc, LinkClosed):
        # The remote link itself is gone (pedclient or pedserver closed it, e.g. after an
        # outage): retrying the command cannot work, only a new link can.  The daemons'
        # own "retry" means that new link; for the HSM it is `hsm ped connect`.
        why = str(exc).replace("; retry", "")
        return PedLinkLost(
            f"the link to the PED at {where} is closed: {why} (not counted; "
            "reconnect with `hsm ped connect`)"
        )
    if isinstance(exc, PedBusy):
        # A busy PED is not a lost path: nothing reached it, and the session keeps what it
        # sealed for the refused hold to send first next time (``ped.hsm_api``).
        return busy_refusal(exc, where, waited=waited, link_stays=link_stays)
    if isinstance(exc, TransportError):
        return PedLinkLost(f"the PED at {where} is unavailable: {exc} (not counted; retry)")
    if isinstance(exc, op_errors.OperationError):
        return PedUnavailable(
            f"the PED operation at {where} did not complete: {exc}",
            # The audit word of a refusal that is not counted (`hsm.logins`).
            outcome={
                op_errors.ErrorCode.KEY_TIMEOUT: "key-timeout",
                op_errors.ErrorCode.CANCELLED: "cancelled",
            }.get(exc.code, "") if exc.code is not None else "",
        )
    if isinstance(exc, PedError):
        return PedUnavailable(f"the PED operation at {where} did not complete: {exc}")
    return exc



def driver_unavailable(exc: PedError, doing: str) -> PedUnavailable:
    """A local PED's driver failed while *doing* ("cannot open the local PED X")."""
    return PedUnavailable(f"{doing}: {exc}")


def passes_through(exc: BaseException) -> bool:
    """True for an error already in the HSM's terms (raised again as it is)."""
    return isinstance(exc, PedUnavailable | WrongKeyColor | WrongKeyset)


def describe_notice(notice: Any, color: Color | None = None, pedk: int | None = None) -> str:
    """A PED progress notice as a line for the shell ("" for none worth showing).

    *color* is the colour of the operation in progress and *pedk* the key timeout, when
    the HSM knows them: "PED: waiting for the blue key 2 of 3 (pedk 200 s)."
    """
    from ped.ops.messages import NoticeKind

    kind, step, total = notice.kind, notice.step, notice.total
    of = f" {step} of {total}" if step and total else ""
    if kind is NoticeKind.INSERT_KEY:
        which = f"the {color.label} key" if color is not None else "key"
        limit = f" (pedk {pedk} s)" if pedk else ""
        return f"PED: waiting for {which}{of}{limit}."
    if kind is NoticeKind.ENTER_PIN:
        return "PED: waiting for the PED PIN."
    if kind is NoticeKind.KEY_ACCEPTED:
        return f"PED: key{of} read."
    if kind is NoticeKind.WRITING_KEY:
        return f"PED: writing key{of}."
    if kind is NoticeKind.QUESTION:
        return "PED: answer the question on the PED screen."
    if kind is NoticeKind.INFO and notice.text:
        text = "".join(c for c in str(notice.text) if c.isprintable())[:120]
        return f"PED: {text}"
    return ""  # ATTEND: the shell already said "Please attend to the PED."


class HsmApiPort:
    """`hsm.pedport.PedPort` over an open ``ped.hsm_api`` session."""

    def __init__(
        self,
        session: Any,
        description: str,
        touch: Callable[[], None],
        timeouts: Callable[[], dict[str, int]],
        *,
        announce: Callable[[str, Color | None], None] | None = None,
        busy_wait: float | None = None,
        keeps_link: bool = False,
    ) -> None:
        self._session = session
        self.description = description
        self._touch = touch
        self._timeouts = timeouts
        self._announce = announce
        # For a busy PED's refusal: how long the session waits for it, and whether the
        # session outlives the command (a held remote link stays connected).
        self._busy_wait = busy_wait
        self._keeps_link = keeps_link

    def _mapped(self, exc: PedError) -> BaseException:
        return map_error(exc, self.description, waited=self._busy_wait,
                         link_stays=self._keeps_link)

    def _say(self, doing: str, color: Color, label: str) -> None:
        if self._announce is None:
            return
        pedk = self._timeouts()["pedk"]
        whom = f" for {label}" if label else ""
        self._announce(
            f"PED: {doing} the {color.label} key(s){whom} (the PED asks for each key and "
            f"its PIN; pedk {pedk} s per key).",
            color,
        )

    def _limits(self) -> dict[str, float]:
        # Read per operation: `hsm ped timeout set` applies at once, even on an open link.
        t = self._timeouts()
        return {"key_timeout": float(t["pedk"]), "op_timeout": float(t["pedo"])}

    async def read_secret(self, color: Color, keyset_id: bytes | None, label: str) -> PedSecret:
        self._say("present", color, label)
        self._touch()
        try:
            result = await self._session.read_secret(
                color, keyset_id=keyset_id, label=label, **self._limits()
            )
        except PedError as exc:
            raise self._mapped(exc) from None
        finally:
            self._touch()
        with result:  # the result is ours: wiped once copied
            return PedSecret(bytearray(result.secret), bytes(result.keyset_id))

    async def imprint(self, color: Color, label: str, secret: bytes | bytearray) -> PedSecret:
        self._say("imprint", color, label)
        self._touch()
        try:
            result = await self._session.imprint(
                color, new_secret=secret, allow_reuse=True, label=label, **self._limits()
            )
        except PedError as exc:
            raise self._mapped(exc) from None
        finally:
            self._touch()
        # The PED returns a secret when the HSM must adopt another one than it sent: an
        # existing keyset was reused, or a PED PIN was set (the PED then hands over the
        # PIN-derived value, which is what later logins will read).
        with result:  # the result is ours: wiped once copied
            got = bytearray(result.secret if result.secret is not None else secret)
            return PedSecret(got, bytes(result.keyset_id), reused=result.reused)

    async def show(self, text: str) -> None:
        try:
            await self._session.show_message(text, op_timeout=self._limits()["op_timeout"])
        except PedError as exc:
            raise self._mapped(exc) from None


def first_error(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
