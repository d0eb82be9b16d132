"""The read flow: a role's keys presented until M shares are in, the PED PIN, the secret.

"Insert a BLUE PED key" until M shares of one keyset are in (``keys.ShareCollector``).
A blank key, a key of the wrong colour, a share already read or an unreadable image is
*refused on the PED* and re-prompted: the HSM never hears of it (a wrong colour is not a
failed login).  A key of another keyset than the HSM expects ends the operation with
`KeysetMismatch`.  A PIN-protected keyset asks for the PED PIN once; the result is
``keys.secret_for_hsm``.  The imprint flow reuses `collect_shares` to read a keyset it
duplicates.

The HSM hears how far the read is (NOTICEs, sent when the PED waits for the operator:
``dialog.py``): "insert key k of M" before each key (M is 0, unknown, until the first
key is read), "key k of M read" after each key but the last, "enter the PIN".  A 1-of-1
read without PIN sends at most one notice, none when the key is already presented.
"""

from __future__ import annotations

import attrs
import trio

from keys import KeyImage, ShareCollector, load_image
from keys import errors as kerr
from keys.colors import Color
from keys.pin import validate_pin
from ped.device.emulated.dialog import OperationDialog
from ped.device.emulated.panel import Prompt, PromptKind
from ped.device.messages import EventKind
from ped.ops import errors as operr
from ped.ops.messages import NoticeKind

MAX_REFUSALS = 100  # a stuck operator cannot spin the PED forever


@attrs.frozen
class ReadOutcome:
    color: Color
    keyset_id: bytes
    label: str
    m: int
    n: int
    secret: bytearray = attrs.field(repr=False)  # what the HSM receives; caller wipes


async def read_secret(
    dialog: OperationDialog, color: Color, keyset_id: bytes | None, label: str
) -> ReadOutcome:
    """Read a keyset of *color* (of *keyset_id* when given) and return its HSM secret."""
    collector = ShareCollector(color, keyset_id)
    images: list[KeyImage] = []
    try:
        pin = await collect_shares(dialog, collector, label, images)
        header = collector.header
        assert header is not None and header.keyset_id is not None
        dialog.panel.show(["Reading key...", "Please wait."])
        secret = await secret_from_shares(collector, pin)
        del pin
        return ReadOutcome(color, header.keyset_id, header.label, header.m, header.n, secret)
    finally:
        collector.wipe()
        for image in images:
            image.wipe()


async def collect_shares(
    dialog: OperationDialog,
    collector: ShareCollector,
    label: str,
    keep: list[KeyImage] | None = None,
) -> str | None:
    """Read keys until M shares are in; return the PIN typed (None without PIN).  The
    images read are appended to *keep* (the caller wipes them), else wiped at once."""
    color = collector.color
    pin: str | None = None
    refusals = 0
    announced = 0  # the key whose INSERT_KEY notice went out (a refusal re-asks in silence)
    while not collector.complete:
        first = collector.header
        index = len(collector.indices) + 1
        count = first.m if first else 0
        lines = [f"Insert a {color.label.upper()} PED key"]
        if label or first:
            lines.append(f"for {label or first.label}")  # type: ignore[union-attr]
        if count > 1:
            lines.append(f"Key {index} of {count}.")
        prompt = Prompt(
            PromptKind.INSERT_KEY,
            color=color,
            keyset_id=first.keyset_id if first else collector.expected_keyset,
            label=label or (first.label if first else ""),
            index=index,
            count=count,
            op=dialog.op,
        )
        if index != announced:
            dialog.notice(NoticeKind.INSERT_KEY, index, count)
            announced = index
        path = await dialog.present_key(prompt, dialog.with_refusal(lines))
        try:
            image = load_image(path)
        except kerr.KeyImageError as exc:
            dialog.event(EventKind.KEY_REFUSED, color, outcome="unreadable")
            dialog.refuse(f"Key unreadable: {_short(exc)}")
            refusals += 1
            if refusals > MAX_REFUSALS:
                raise operr.PedFault("too many unreadable keys") from None
            continue
        try:
            collector.add(image)
        except kerr.ImageKeysetMismatch:
            dialog.event(EventKind.KEY_REFUSED, color, image.keyset_id, "keyset-mismatch")
            image.wipe()
            dialog.panel.show(["Wrong keyset:", "this key is not of", "the keyset expected."])
            raise operr.KeysetMismatch(
                f"{color.a_label} key of keyset {image.header.keyset_hex} was presented"
            ) from None
        except (
            kerr.BlankKey,
            kerr.WrongImageColor,
            kerr.RepeatedShare,
            kerr.InconsistentShares,
        ) as exc:
            word, text = _refusal_of(exc, image)
            dialog.event(EventKind.KEY_REFUSED, color, image.keyset_id, word)
            image.wipe()
            dialog.refuse(text)
            refusals += 1
            if refusals > MAX_REFUSALS:
                raise operr.PedFault("too many refused keys") from None
            continue
        if keep is not None:
            keep.append(image)
        else:
            image.wipe()
        header = collector.header
        assert header is not None
        dialog.event(
            EventKind.KEY_READ, color, header.keyset_id, "ok", f"key {index} of {header.m}"
        )
        if not collector.complete:
            dialog.notice(NoticeKind.KEY_ACCEPTED, index, header.m)
        if header.pin_protected and pin is None:
            dialog.notice(NoticeKind.ENTER_PIN)
            pin = await _ask_pin(dialog, color, header.label, header.keyset_id)
        if not collector.complete:
            dialog.panel.show(["Key read.", "Remove the key."])
    return pin


async def _ask_pin(
    dialog: OperationDialog, color: Color, label: str, keyset_id: bytes | None
) -> str:
    prompt = Prompt(PromptKind.PIN, color=color, label=label, keyset_id=keyset_id, op=dialog.op)
    while True:
        pin = await dialog.digits(["Enter PED PIN:"], prompt, allow_empty=False)
        try:
            validate_pin(pin)
        except kerr.InvalidPin:
            dialog.panel.show(["PIN must be 4-48", "digits."])
            continue
        # A wrong PIN cannot be detected here (nothing stores it): the HSM will find a
        # wrong secret.  The event says a PIN was entered, never what or how long.
        dialog.event(EventKind.PIN_ENTERED, color, keyset_id, "ok")
        return pin


async def secret_from_shares(collector: ShareCollector, pin: str | None) -> bytearray:
    """The secret for the HSM; scrypt (PIN keys) runs in a thread, a plain copy does not."""
    if pin is None:
        return collector.secret_for_hsm(None)
    return await trio.to_thread.run_sync(collector.secret_for_hsm, pin)


def _short(exc: kerr.KeyImageError) -> str:
    return exc.problem[:40]


def _refusal_of(exc: kerr.KeyImageError, image: KeyImage) -> tuple[str, str]:
    if isinstance(exc, kerr.BlankKey):
        return "blank", "Key is blank."
    if isinstance(exc, kerr.WrongImageColor):
        actual = image.color.label.upper() if image.color else "?"
        return "wrong-colour", f"Wrong colour: {actual} key."
    if isinstance(exc, kerr.RepeatedShare):
        return "already-read", "Key already read."
    return "inconsistent", "Key damaged."
