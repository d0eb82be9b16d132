"""The imprint flow: the four questions, then the new keys (or copies) on blank keys.

The questions in order - reuse an existing keyset?  M of N?  PED PIN?  duplicates? -
then "Insert a blank key" for each of the N keys and each copy.  A key that is not
blank is overwritten only after YES to "Overwrite?".  A reused keyset is read first
(``read_flow.collect_shares``) and only its copies are written.  The new secret and
the key images are wiped when the flow ends, however it ends.

The HSM hears how far it is (NOTICEs): "answer the question on the PED" before the
questions, "writing key k of N" before each blank asked for (a copy of key k too).
"""

from __future__ import annotations

from pathlib import Path

import attrs
import trio

from keys import KeyImage, ShareCollector, new_keyset, read_header, write_image
from keys import errors as kerr
from keys.colors import Color
from keys.image import LABEL_MAX_BYTES
from keys.pin import secret_for_hsm, validate_pin
from keys.shamir import wipe
from ped.device.emulated.dialog import OperationDialog
from ped.device.emulated.panel import Prompt, PromptKind
from ped.device.emulated.read_flow import collect_shares, secret_from_shares
from ped.device.messages import EventKind
from ped.ops.messages import NoticeKind


@attrs.frozen
class ImprintOutcome:
    color: Color
    keyset_id: bytes
    m: int
    n: int
    pin: bool
    copies: int  # keys written, duplicates included
    reused: bool
    #: secret_for_hsm of the keyset: what the HSM will receive at login.  Needed by the
    #: HSM whenever it cannot compute it itself (reused keyset, or a PED PIN was set).
    secret: bytearray | None = attrs.field(repr=False, default=None)


def key_label(requested: str, color: Color) -> str:
    """The label written on new keys: the HSM's text made fit for a key image.

    The HSM's label is only a prompt text, so the PED does not refuse an imprint over
    it: an empty label becomes the role's name, and a long one is cut (on a character
    boundary) to what a key image holds.
    """
    text = " ".join(requested.split()) or color.role
    while len(text.encode("utf-8")) > LABEL_MAX_BYTES:
        text = text[:-1].rstrip()
    return text


async def imprint(
    dialog: OperationDialog,
    color: Color,
    label: str,
    new_secret: bytes | bytearray | None,
    allow_reuse: bool,
) -> ImprintOutcome:
    """Imprint *new_secret* (or, if allowed and chosen, reuse a keyset) on keys of *color*."""
    op = dialog.op
    reuse = False
    if new_secret is not None:
        dialog.notice(NoticeKind.QUESTION)  # reuse?, M, N, PIN, copies
    if allow_reuse:
        reuse = new_secret is None or await dialog.yes_no(
            [f"{color.label.upper()} key:", "Reuse an existing", "keyset?", "YES / NO"],
            Prompt(PromptKind.YES_NO, color=color, label=label, question="reuse", op=op),
        )
    if reuse:
        return await _imprint_reuse(dialog, color, label)
    assert new_secret is not None
    m = await dialog.number(
        ["M value? (1-16)", "Keys needed to log in."],
        Prompt(PromptKind.NUMBER, color=color, label=label, question="m", low=1, high=16, op=op),
    )
    n = await dialog.number(
        [f"N value? ({m}-16)", "Keys to make."],
        Prompt(PromptKind.NUMBER, color=color, label=label, question="n", low=m, high=16, op=op),
    )
    pin = await _new_pin(dialog, color, label)
    copies = await _ask_copies(dialog, color, label)
    secret = bytearray(new_secret)
    images = new_keyset(color, label, m, n, pin is not None, secret)
    try:
        keyset_id = images[0].keyset_id
        assert keyset_id is not None
        written = await _write_keys(dialog, images, copies, color, label)
        derived = None
        if pin is not None:
            dialog.panel.show(["Finishing...", "Please wait."])
            derived = await trio.to_thread.run_sync(secret_for_hsm, secret, keyset_id, pin)
        del pin
        dialog.panel.show(["Imprint complete.", f"{written} key(s) written."])
        return ImprintOutcome(color, keyset_id, m, n, derived is not None, written, False, derived)
    finally:
        wipe(secret)
        for image in images:
            image.wipe()


async def _imprint_reuse(dialog: OperationDialog, color: Color, label: str) -> ImprintOutcome:
    collector = ShareCollector(color, None)
    images: list[KeyImage] = []
    try:
        pin = await collect_shares(dialog, collector, label, images)
        header = collector.header
        assert header is not None and header.keyset_id is not None
        dialog.notice(NoticeKind.QUESTION)
        copies = await _ask_copies(dialog, color, header.label)
        written = 0
        if copies:
            written = await _write_keys(
                dialog, images, copies, color, header.label, originals=False
            )
        secret = await secret_from_shares(collector, pin)
        del pin
        return ImprintOutcome(
            color,
            header.keyset_id,
            header.m,
            header.n,
            header.pin_protected,
            written,
            True,
            secret,
        )
    finally:
        collector.wipe()
        for image in images:
            image.wipe()


async def _new_pin(dialog: OperationDialog, color: Color, label: str) -> str | None:
    prompt = Prompt(PromptKind.NEW_PIN, color=color, label=label, op=dialog.op)
    lines = ["New PED PIN?", "4-48 digits, or", "ENTER for none."]
    while True:
        pin = await dialog.digits(lines, prompt, allow_empty=True)
        if not pin:
            return None
        try:
            validate_pin(pin)
        except kerr.InvalidPin:
            lines = ["PIN must be 4-48", "digits; ENTER for", "none."]
            continue
        again = await dialog.digits(
            ["Confirm new PED PIN:"],
            Prompt(PromptKind.CONFIRM_PIN, color=color, label=label, op=dialog.op),
            allow_empty=False,
        )
        if again == pin:
            return pin
        lines = ["PINs differ.", "New PED PIN?", "ENTER for none."]


async def _ask_copies(dialog: OperationDialog, color: Color, label: str) -> int:
    duplicating = await dialog.yes_no(
        ["Are you duplicating", "this PED Key?", "YES / NO"],
        Prompt(PromptKind.YES_NO, color=color, label=label, question="duplicate", op=dialog.op),
    )
    if not duplicating:
        return 0
    return await dialog.number(
        ["Copies of each key?", "(1-16)"],
        Prompt(
            PromptKind.NUMBER,
            color=color,
            label=label,
            question="copies",
            low=1,
            high=16,
            op=dialog.op,
        ),
    )


async def _write_keys(
    dialog: OperationDialog,
    images: list[KeyImage],
    copies: int,
    color: Color,
    label: str,
    *,
    originals: bool = True,
) -> int:
    """Write each image (unless not *originals*) and *copies* copies of it on blanks."""
    used: set[str] = {str(Path(i.path).resolve()) for i in images if i.path}
    written = 0
    total = len(images)
    for number, image in enumerate(images, start=1):
        rounds = ([0] if originals else []) + list(range(1, copies + 1))
        for copy in rounds:
            what = f"key {number} of {total}" if not copy else (f"copy {copy} of key {number}")
            prompt = Prompt(
                PromptKind.INSERT_BLANK,
                color=color,
                label=label,
                keyset_id=image.keyset_id,
                index=number,
                count=total,
                question="copy" if copy else "key",
                op=dialog.op,
            )
            dialog.notice(NoticeKind.WRITING_KEY, number, total)
            path = await _blank_target(
                dialog, prompt, ["Insert a blank key:", f"{color.label.upper()} {what}"], used
            )
            await trio.to_thread.run_sync(write_image, path, image)
            used.add(str(path.resolve()))
            written += 1
            dialog.event(EventKind.KEY_WRITTEN, color, image.keyset_id, "ok", what)
            dialog.panel.show(["Key written.", "Remove the key."])
    return written


async def _blank_target(
    dialog: OperationDialog, prompt: Prompt, lines: list[str], used: set[str]
) -> Path:
    """The path of a blank key presented (or of a key the operator agreed to overwrite)."""
    while True:
        path = await dialog.present_key(prompt, dialog.with_refusal(lines))
        if str(path.resolve()) in used:
            dialog.event(EventKind.KEY_REFUSED, prompt.color, outcome="already-used")
            dialog.refuse("Key used already.")
            continue
        try:
            header = await trio.to_thread.run_sync(read_header, path)
        except kerr.MissingImage:
            dialog.event(EventKind.KEY_REFUSED, prompt.color, outcome="unreadable")
            dialog.refuse("No key there.")
            continue
        except kerr.KeyImageError:
            header = None  # a damaged key may be overwritten, after asking
        if header is not None and header.blank:
            return path
        what = header.describe() if header is not None else "a damaged key"
        overwrite = await dialog.yes_no(
            ["Key is not blank:", what[:32], "Overwrite it?", "YES / NO"],
            attrs.evolve(prompt, kind=PromptKind.YES_NO, question="overwrite"),
        )
        if overwrite:
            return path
        dialog.refuse("Not overwritten.")
