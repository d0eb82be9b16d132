"""The operator adapter's instruction codec, and pedemu's control operator that obeys it."""

from __future__ import annotations

import io
import json
import queue
from pathlib import Path

import pytest
import trio

from keys import Keyring, new_keyset
from keys.colors import Color
from ped.device.emulated.control import ControlOperator
from ped.device.emulated.panel import Panel, Prompt, PromptKind
from pedtools.conform.ped_operator import (
    INSTRUCTIONS,
    BadAdapterReply,
    PersonOperator,
    Reply,
    decode_reply,
    describe,
    encode,
    instruction,
)


def test_instructions_are_checked_and_encoded_one_line_each() -> None:
    ins = instruction("present", colour="blue", keyset="00ff", share=2)
    line = encode(ins, 7)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"id": 7, "do": "present", "colour": "blue", "keyset": "00ff",
                                "share": 2}
    assert instruction("read", colour="gray", pin=None) == {"do": "read", "colour": "gray"}
    with pytest.raises(ValueError, match="unknown instruction"):
        instruction("dance")
    with pytest.raises(ValueError, match="takes no digits"):
        instruction("present", digits="1234")
    with pytest.raises(ValueError, match="unknown question"):
        instruction("answer", question="colour", value="blue")


def test_replies_are_decoded_strictly() -> None:
    assert decode_reply(b'{"ok": true, "id": 3}') == Reply(True, "", 3)
    assert decode_reply('{"ok": false, "why": "no such key"}') == Reply(False, "no such key")
    for bad in (b"yes", b'{"why": "x"}', b'{"ok": "true"}', b"[1]"):
        with pytest.raises(BadAdapterReply):
            decode_reply(bad)


def test_every_instruction_reads_as_a_sentence_for_a_person() -> None:
    samples = {"answer": {"question": "m", "value": 2}, "pin": {"digits": "4711"},
               "read": {"colour": "gray", "keyset": "ab", "shares": [1, 2], "pin": "4711"},
               "present": {"colour": "blue", "share": 1}}
    for do in INSTRUCTIONS:
        text = describe({"do": do, **samples.get(do, {})})
        assert (text and text[0].isupper()) or do in ("hello", "reset", "bye"), do
    assert "4711" in describe({"do": "pin", "digits": "4711"})
    assert "ENTER alone" in describe({"do": "pin", "digits": ""})


class _Terminal:
    """A terminal whose lines the test types once the prompt is shown."""

    def __init__(self) -> None:
        self.lines: queue.Queue[str] = queue.Queue()

    def readline(self) -> str:
        return self.lines.get()


async def _prompted(out: io.StringIO, count: int) -> None:
    with trio.fail_after(5):
        while out.getvalue().count(">>>") < count:
            await trio.sleep(0.01)


async def test_a_person_presses_enter_or_says_why_not() -> None:
    out, terminal = io.StringIO(), _Terminal()
    person = PersonOperator(out=out, stdin=terminal)  # type: ignore[arg-type]
    await person.do(instruction("reset"))  # nothing to do at the PED: not shown
    assert out.getvalue() == ""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(person.do, instruction("cancel"))
        await _prompted(out, 1)
        terminal.lines.put("\n")
    assert "press CLR" in out.getvalue()

    # An instruction given up on (its case ended) leaves no reader to swallow an Enter.
    with trio.move_on_after(0.05):
        await person.do(instruction("blank"))
    async with trio.open_nursery() as nursery:
        async def typed() -> None:
            await _prompted(out, 3)
            terminal.lines.put("fail no blank key here\n")

        nursery.start_soon(typed)
        with pytest.raises(Exception, match="no blank key here"):
            await person.do(instruction("blank"))
    terminal.lines.put("")  # the end of the input: the reader thread ends


async def test_the_control_operator_acts_on_the_next_prompt_and_refuses_a_mismatch(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    images = new_keyset(Color.BLUE, "SO", 1, 1, secret=bytes(32))
    Keyring(keys).imprint(images, create=True)
    panel = Panel()
    control = ControlOperator(panel, keys, str(tmp_path / "c.sock"))

    async def reply(ins: dict[str, object]) -> dict[str, object]:
        return await control.perform_line(encode({**ins, "timeout": 5}, 1))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reply, instruction("present", colour="blue"))
        await trio.sleep(0)
        panel.show(["Insert a BLUE PED key"], Prompt(PromptKind.INSERT_KEY, Color.BLUE, op=1))
    item = await panel.next_input(1)
    assert item is not None and getattr(item, "path", None) is not None
    panel.show(["Enter PED PIN:"], Prompt(PromptKind.PIN, op=1))
    refused = await reply(instruction("blank"))
    assert refused["ok"] is False and "asks something else" in str(refused["why"])
    assert refused["id"] == 1
    panel.show(["M value?"], Prompt(PromptKind.NUMBER, question="m", op=2))
    assert (await reply(instruction("answer", question="n", value=2)))["ok"] is False
    nothing = await control.perform_line(encode({"do": "cancel", "timeout": 0.05}, 2))
    assert nothing == {"ok": False, "why": "the PED asked for nothing within 0.05 s", "id": 2}
    assert (await control.perform_line(b"not json"))["ok"] is False
