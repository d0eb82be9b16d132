"""The operator adapter of ``pedconform ped``: instructions for whoever works the PED.

Some cases need hands at the PED: a key presented, a question answered, a PIN typed,
CLR pressed.  The suite says what, as one JSON object a line
(docs/protocol/conformance.md lists the instructions):

    {"id": 7, "do": "present", "colour": "blue", "keyset": "5f0c...e1", "share": 2}
    {"id": 8, "do": "answer", "question": "m", "value": 2}
    {"id": 9, "do": "pin", "digits": "4711"}

and the adapter answers one line each, ``{"id": 7, "ok": true}`` once it has acted, or
``{"id": 7, "ok": false, "why": "..."}``.  `ProcessOperator` talks to an adapter
program (``--operator CMD``); `PersonOperator` prints each instruction for a person and
waits for Enter.  `encode` / `decode_reply` / `describe` are the codec, pure functions.
PINs in instructions are test values the suite chose for the keysets it imprints; the
RPV's own keys and PIN are the operator's (``rpv``): the suite never learns that PIN.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import Protocol, TextIO

import attrs
import trio

from ped.errors import PedError

#: Every instruction and the fields it takes (besides "do" and "id").
INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "hello": ("suite", "version"),
    "rpv": (),
    "read": ("colour", "keyset", "shares", "pin"),
    "present": ("colour", "keyset", "share"),
    "blank": (),
    "answer": ("question", "value"),
    "pin": ("digits",),
    "cancel": (),
    "wait-timeout": (),
    "remove": (),
    "reset": (),
    "bye": (),
}
QUESTIONS = ("reuse", "m", "n", "duplicate", "copies", "overwrite", "local")
#: Instructions a person need not be shown (nothing to do at the PED).
_SILENT = frozenset({"hello", "reset", "bye"})


class BadAdapterReply(PedError, ValueError):
    """An adapter's answer line is not a reply (not JSON, no "ok")."""


class OperatorFailed(PedError):
    """The adapter could not carry out an instruction (its ``why``) or did not answer."""


@attrs.frozen
class Reply:
    ok: bool
    why: str = ""
    id: int | None = None


def instruction(do: str, **fields: object) -> dict[str, object]:
    """An instruction, checked against `INSTRUCTIONS` (a mistake in the suite, not the PED)."""
    allowed = INSTRUCTIONS.get(do)
    if allowed is None:
        raise ValueError(f"unknown instruction {do!r}")
    unknown = set(fields) - set(allowed) - {"timeout"}
    if unknown:
        raise ValueError(f"instruction {do!r} takes no {', '.join(sorted(unknown))}")
    if do == "answer" and fields.get("question") not in QUESTIONS:
        raise ValueError(f"unknown question {fields.get('question')!r}")
    return {"do": do, **{k: v for k, v in fields.items() if v is not None}}


def encode(ins: Mapping[str, object], ident: int) -> bytes:
    """One instruction line (UTF-8 JSON and a newline) with its *ident*."""
    return json.dumps({"id": ident, **ins}, separators=(", ", ": ")).encode() + b"\n"


def decode_reply(line: bytes | str) -> Reply:
    try:
        data = json.loads(line)
    except ValueError:
        raise BadAdapterReply(f"the adapter's answer is not JSON: {_clip(line)!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        raise BadAdapterReply(f'the adapter\'s answer has no "ok": true/false: {_clip(line)!r}')
    ident = data.get("id")
    return Reply(
        ok=data["ok"],
        why=str(data.get("why", "")),
        id=ident if isinstance(ident, int) else None,
    )


def describe(ins: Mapping[str, object]) -> str:
    """What a person at the PED should do, in words."""
    do = ins["do"]
    if do == "rpv":
        return ("Present the orange key(s) of the RPV given to the suite as the PED asks, "
                "and its PED PIN if it has one.")
    if do == "read":
        listed = ins.get("shares")
        shares = ", ".join(str(i) for i in listed) if isinstance(listed, list) else "1"
        text = (f"Present the {ins.get('colour')} keys {shares} of keyset {ins.get('keyset')} "
                "as the PED asks for them")
        if ins.get("pin"):
            text += f", and type the test PIN {ins['pin']} when it asks for the PED PIN"
        return text + "."
    if do == "present":
        what = f"the {ins.get('colour')} key"
        if ins.get("share"):
            what += f" number {ins['share']}"
        if ins.get("keyset"):
            what += f" of keyset {ins['keyset']}"
        return f"When the PED asks for a key, present {what} (then ENTER on the PED)."
    if do == "blank":
        return "When the PED asks for a blank key, present one (then ENTER on the PED)."
    if do == "answer":
        return f"When the PED asks {ins['question']!r}, answer {ins['value']}."
    if do == "pin":
        digits = str(ins.get("digits", ""))
        if not digits:
            return "When the PED asks for a PED PIN, press ENTER alone (no PIN)."
        return f"When the PED asks for a PED PIN, type the test PIN {digits} and ENTER."
    if do == "cancel":
        return "When the PED asks something, press CLR (cancel) on the PED."
    if do == "wait-timeout":
        return "When the PED asks something, do nothing: let its key timeout pass."
    if do == "remove":
        return "Take the key out of the PED."
    return f"{do}"


def _clip(line: bytes | str) -> str:
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    return text[:120]


class Operator(Protocol):
    """Whoever works the PED for the suite."""

    async def do(self, ins: Mapping[str, object]) -> None:
        """Carry out *ins*; `OperatorFailed` if it cannot."""

    async def aclose(self) -> None: ...


class ProcessOperator:
    """An adapter program: instructions on its stdin, answers on its stdout."""

    def __init__(self, command: str) -> None:
        self.command = command
        self._process: trio.Process | None = None
        self._buffer = b""
        self._ids = 0
        self._lock = trio.Lock()

    async def start(self) -> None:
        """Start the adapter; `OperatorFailed` if it cannot be started."""
        try:
            self._process = await trio.lowlevel.open_process(
                shlex.split(self.command), stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        except (OSError, ValueError) as exc:
            raise OperatorFailed(f"cannot start the operator adapter {self.command!r}: {exc}"
                                 ) from None

    async def do(self, ins: Mapping[str, object]) -> None:
        async with self._lock:
            process = self._process
            if process is None or process.stdin is None or process.stdout is None:
                raise OperatorFailed("the operator adapter is not running")
            self._ids += 1
            ident = self._ids
            try:
                await process.stdin.send_all(encode(ins, ident))
                while True:
                    reply = decode_reply(await self._line(process.stdout))
                    if reply.id in (None, ident):
                        break  # (an answer to an instruction abandoned earlier is skipped)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                raise OperatorFailed("the operator adapter ended") from None
            except BadAdapterReply as exc:
                raise OperatorFailed(str(exc)) from None
        if not reply.ok:
            raise OperatorFailed(f"operator: {reply.why or 'refused'}")

    async def _line(self, stdout: trio.abc.ReceiveStream) -> bytes:
        while b"\n" not in self._buffer:
            data = await stdout.receive_some(4096)
            if not data:
                raise trio.BrokenResourceError("end of the adapter's output")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    async def aclose(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with trio.CancelScope(shield=True):
            if process.stdin is not None:
                await process.stdin.aclose()
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


class PersonOperator:
    """A person at the PED: each instruction printed, Enter pressed when done.

    One thread reads the terminal for the whole run and hands each line over, so that an
    instruction given up on (its case ended first) leaves no reader behind to swallow
    the next Enter; lines typed before an instruction was shown are not taken for it.
    """

    def __init__(self, out: TextIO | None = None, stdin: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.stdin = stdin or sys.stdin
        self._lines: trio.MemoryReceiveChannel[str] | None = None

    def _start_reader(self) -> trio.MemoryReceiveChannel[str]:
        send, receive = trio.open_memory_channel[str](64)
        token = trio.lowlevel.current_trio_token()

        def read() -> None:
            for line in iter(self.stdin.readline, ""):
                try:
                    trio.from_thread.run_sync(send.send_nowait, line, trio_token=token)
                except (trio.RunFinishedError, trio.WouldBlock, trio.BrokenResourceError):
                    return
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(send.close, trio_token=token)

        threading.Thread(target=read, name="pedconform-stdin", daemon=True).start()
        return receive

    async def do(self, ins: Mapping[str, object]) -> None:
        if ins["do"] in _SILENT:
            return
        if self._lines is None:
            self._lines = self._start_reader()
        with contextlib.suppress(trio.WouldBlock):
            while True:
                self._lines.receive_nowait()  # typed before this instruction was shown
        self.out.write(f"\n>>> {describe(ins)}\n    Press Enter here when done"
                       " (or type 'fail WHY'): ")
        self.out.flush()
        try:
            line = await self._lines.receive()
        except trio.EndOfChannel:
            raise OperatorFailed("operator: the terminal's input ended") from None
        if line.strip().startswith("fail"):
            raise OperatorFailed(f"operator: {line.strip()[4:].strip() or 'could not'}")

    async def aclose(self) -> None:
        return None
