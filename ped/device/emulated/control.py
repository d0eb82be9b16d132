"""The ``control:PATH`` operator: works the panel on instructions of a conformance adapter.

``pedconform ped`` (docs/protocol/conformance.md) tells its operator adapter, one JSON
line at a time, what a person at the PED would do: "present the blue key 2 of keyset
X", "answer M = 2", "type the PIN 4321", "press CLR", "let the key timeout pass".  With
``--operator control:PATH`` pedemu listens on the Unix socket PATH (mode 0600) for those
lines (``python -m pedtools.conform.emulated_operator PATH`` relays the adapter's stdin
to it) and answers each with ``{"ok": true}`` or ``{"ok": false, "why": ...}`` once it
has acted.  Each instruction acts on the PED's next prompt not answered yet (the one
on the screen, or the next one shown), so the suite may send it before or after the
request that makes the PED ask.

The instructions name keys by colour, keyset id and share number: the key images, and
so every secret, stay in pedemu's keyring.  ``rpv`` ("present the orange keys of the
RPV, and their PIN") is answered from the keyring's orange keys (not the suite's own
test keysets, labelled ``conform ...``) and ``--pin-file``, as the ``auto`` operator
would: the suite never learns the operator's own PINs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket as _socket
from pathlib import Path

import trio

from keys import Keyring
from keys.colors import Color
from ped.daemon.sockets import SocketPath, clear_stale_socket
from ped.device.emulated.auto import AutoOperator
from ped.device.emulated.panel import Input, Insert, Panel, Press, PromptKind, Remove, Screen
from ped.errors import PedError

log = logging.getLogger("pedemu.control")

#: Seconds an instruction waits for the PED to ask something, unless it says otherwise.
DEFAULT_WAIT = 30.0
MAX_LINE = 4096
#: The prompts an operator answers (the others only show something).
_ACTIONABLE = frozenset(PromptKind) - {PromptKind.IDLE, PromptKind.MESSAGE}
_QUESTIONS = {"local": "rpv-local"}
#: The label prefix of the keysets ``pedconform`` imprints: test keys, never the RPV.
TEST_LABEL = "conform "


class ControlSocketError(PedError):
    """The control socket cannot be set up (pedemu refuses to start)."""


class InstructionRefused(PedError):
    """An instruction cannot be carried out; its text goes back as ``why``."""


class ControlOperator:
    def __init__(
        self,
        panel: Panel,
        keyring: str | os.PathLike[str],
        path: str,
        *,
        pin_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.panel = panel
        self.keyring = Keyring(keyring)
        self.path = path
        self._auto = AutoOperator(panel, keyring, pin_file=pin_file)
        self._handled = 0  # seq of the last screen answered (or let pass)
        self._auto_op: int | None = None  # the operation `rpv` answers by itself
        self._blanks_given: set[Path] = set()
        self._rpv_op = 0
        self._rpv_given: set[Path] = set()
        self._lock = trio.Lock()
        #: (Watching from the start: `perform` may be called without `run`, in-process.)
        self._unsubscribe = panel.observe(self._on_screen)

    async def run(self) -> None:
        listener = self._listen()
        log.info("control operator listening on %s", self.path)
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(self._serve, stream)
        finally:
            self._unsubscribe()
            with trio.CancelScope(shield=True):
                await listener.aclose()
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def _listen(self) -> trio.SocketListener:
        try:
            if clear_stale_socket(Path(self.path)) is not SocketPath.FREE:
                raise ControlSocketError(f"control socket {self.path} is in use or not a socket")
        except OSError as exc:
            raise ControlSocketError(f"cannot check {self.path}: {exc.strerror}") from None
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # whoever holds the socket works the PED: owner only
        try:
            sock.bind(self.path)
            sock.listen(4)
        except OSError as exc:
            sock.close()
            raise ControlSocketError(f"cannot listen on {self.path}: {exc.strerror}") from None
        finally:
            os.umask(old_umask)
        return trio.SocketListener(trio.socket.from_stdlib_socket(sock))

    async def _serve(self, stream: trio.SocketStream) -> None:
        """Read instruction lines; perform them in order; a ``reset`` ends the one
        in progress at once (its prompt may never come: the case that sent it is over)."""
        send, receive = trio.open_memory_channel[bytes](64)
        current: list[trio.CancelScope] = []

        async def perform_all() -> None:
            async for line in receive:
                with trio.CancelScope() as scope:
                    current.append(scope)
                    reply = await self.perform_line(line)
                current.clear()
                if scope.cancelled_caught:
                    reply = _reply_to(line, {"ok": False, "why": "reset before it was done"})
                try:
                    await stream.send_all(json.dumps(reply).encode() + b"\n")
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return

        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(perform_all)
            buffer = bytearray()
            while True:
                try:
                    data = await stream.receive_some(MAX_LINE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    data = b""
                if not data or len(buffer) > MAX_LINE:
                    nursery.cancel_scope.cancel()
                    return
                buffer += data
                while b"\n" in buffer:
                    line, _, rest = bytes(buffer).partition(b"\n")
                    buffer = bytearray(rest)
                    if _is_reset(line):
                        for scope in current:
                            scope.cancel()
                    await send.send(line)

    async def perform_line(self, line: bytes) -> dict[str, object]:
        """One instruction line -> the reply (``id`` echoed when the instruction has one)."""
        try:
            instruction = json.loads(line)
            if not isinstance(instruction, dict) or not isinstance(instruction.get("do"), str):
                raise InstructionRefused('an instruction is a JSON object with a "do" field')
        except (ValueError, InstructionRefused) as exc:
            return _reply_to(line, {"ok": False, "why": f"bad instruction: {exc}"})
        reply: dict[str, object] = {"ok": True}
        try:
            async with self._lock:
                await self.perform(instruction)
        except InstructionRefused as exc:
            reply = {"ok": False, "why": str(exc)}
        return _reply_to(line, reply)

    async def perform(self, ins: dict[str, object]) -> None:
        do = ins["do"]
        wait = _number(ins.get("timeout", DEFAULT_WAIT), "timeout")
        if do in ("hello", "bye"):
            return
        if do == "reset":
            self._handled = self.panel.screen.seq
            self._auto_op = None
            if self.panel.slot is not None:
                await self.panel.send(Remove())
            return
        if do == "remove":
            await self.panel.send(Remove())
            return
        screen = await self._next_prompt(wait)
        if do == "wait-timeout":
            return  # let the prompt stand until the PED gives up
        if do == "cancel":
            await self._send([Press("CLR")])
            return
        if do == "rpv":
            if screen.prompt.question == "rpv-local":
                # "Without an orange key?" NO: the operator brings the RPV's keys.
                await self._send([Press("NO")])
                screen = await self._next_prompt(wait)
            self._expect(screen, PromptKind.INSERT_KEY)
            self._auto_op = screen.prompt.op  # (the read's own, after a local question)
            await self._send(self._rpv_inputs(screen))
            return
        if do == "read":
            await self._read(screen, ins, wait)
            return
        if do == "present":
            self._expect(screen, PromptKind.INSERT_KEY)
            await self._send([Insert(self._key(ins)), Press("ENTER")])
            return
        if do == "blank":
            self._expect(screen, PromptKind.INSERT_BLANK)
            await self._send([Insert(self._blank()), Press("ENTER")])
            return
        if do == "pin":
            self._expect(screen, PromptKind.PIN, PromptKind.NEW_PIN, PromptKind.CONFIRM_PIN)
            digits = str(ins.get("digits", ""))
            if not digits.isdigit() and digits:
                raise InstructionRefused("a PIN is digits")
            await self._send([*(Press(d) for d in digits), Press("ENTER")])
            return
        if do == "answer":
            await self._answer(screen, ins)
            return
        raise InstructionRefused(f"unknown instruction {do!r}")

    # -- the panel -----------------------------------------------------------------------

    def _on_screen(self, screen: Screen) -> None:
        """Go on answering the orange read an ``rpv`` instruction started (M of N, PIN)."""
        p = screen.prompt
        if screen.echo or self._auto_op is None or p.op != self._auto_op:
            return
        if p.kind in (PromptKind.INSERT_KEY, PromptKind.PIN) and p.color is Color.ORANGE:
            self._handled = screen.seq
            for item in self._rpv_inputs(screen):
                with contextlib.suppress(trio.WouldBlock):
                    self.panel.send_nowait(item)

    def _rpv_inputs(self, screen: Screen) -> list[Input]:
        """The operator's own orange keys (never the suite's ``conform`` test keysets) and
        their PIN from the PIN file."""
        p = screen.prompt
        if p.kind is PromptKind.PIN:
            return self._auto.answer(screen)
        if p.op != self._rpv_op:
            self._rpv_op, self._rpv_given = p.op, set()
        for entry in self.keyring.keys(Color.ORANGE, p.keyset_id):
            assert entry.header is not None
            if entry.header.label.startswith(TEST_LABEL) or entry.path in self._rpv_given:
                continue
            self._rpv_given.add(entry.path)
            return [Insert(entry.path), Press("ENTER")]
        return [Press("CLR")]  # no (further) orange key at hand: walk away

    async def _next_prompt(self, wait: float) -> Screen:
        with trio.move_on_after(wait):
            while True:
                screen = self.panel.screen
                if (screen.seq > self._handled and not screen.echo
                        and screen.prompt.kind in _ACTIONABLE):
                    self._handled = screen.seq
                    return screen
                await self.panel.wait_screen(screen.seq)
        raise InstructionRefused(f"the PED asked for nothing within {wait:g} s")

    async def _send(self, inputs: list[Input]) -> None:
        for item in inputs:
            await self.panel.send(item)

    @staticmethod
    def _expect(screen: Screen, *kinds: PromptKind) -> None:
        if screen.prompt.kind not in kinds:
            shown = " / ".join(line for line in screen.lines if line)
            asked = screen.prompt.kind.value
            raise InstructionRefused(f"the PED asks something else ({asked}: {shown})")

    async def _read(self, screen: Screen, ins: dict[str, object], wait: float) -> None:
        """Present the keys *ins* names and type its PIN, in whatever order the PED asks."""
        shares = ins.get("shares") or [1]
        if not isinstance(shares, list) or not all(isinstance(i, int) for i in shares):
            raise InstructionRefused("read: shares is a list of share numbers")
        pin = ins.get("pin")
        left = list(shares)
        pin_left = bool(pin)
        while True:
            kind = screen.prompt.kind
            if kind is PromptKind.INSERT_KEY and left:
                key = self._key({**ins, "share": left.pop(0)})
                await self._send([Insert(key), Press("ENTER")])
            elif kind is PromptKind.PIN and pin_left:
                pin_left = False
                await self._send([*(Press(d) for d in str(pin)), Press("ENTER")])
            else:
                self._expect(screen)  # refused: not what this read expects
            if not left and not pin_left:
                return
            screen = await self._next_prompt(wait)

    async def _answer(self, screen: Screen, ins: dict[str, object]) -> None:
        prompt = screen.prompt
        question = str(ins.get("question", ""))
        if prompt.question != _QUESTIONS.get(question, question):
            asked = prompt.question or prompt.kind.value
            raise InstructionRefused(f"the PED asks {asked!r}, not {question!r}")
        value = str(ins.get("value", "")).lower()
        if prompt.kind is PromptKind.YES_NO:
            if value not in ("yes", "no"):
                raise InstructionRefused("the answer to a yes/no question is yes or no")
            await self._send([Press(value.upper())])
        elif prompt.kind is PromptKind.NUMBER:
            if not value.isdigit():
                raise InstructionRefused("the answer to this question is a number")
            await self._send([*(Press(d) for d in value), Press("ENTER")])
        else:
            self._expect(screen, PromptKind.YES_NO, PromptKind.NUMBER)

    # -- the keys at hand ----------------------------------------------------------------

    def _key(self, ins: dict[str, object]) -> Path:
        try:
            color = Color.parse(str(ins.get("colour", "")))
            keyset = bytes.fromhex(str(ins["keyset"])) if ins.get("keyset") else None
            share = int(_number(ins["share"], "share")) if ins.get("share") else None
        except (KeyError, ValueError, TypeError):
            raise InstructionRefused(
                "present needs a colour, and a keyset in hex and a share number if given"
            ) from None
        for entry in self.keyring.keys(color, keyset):
            assert entry.header is not None
            if share is None or entry.header.index == share:
                return entry.path
        which = f" {share}" if share else ""
        raise InstructionRefused(f"no {color.label} key{which} of that keyset in the keyring")

    def _blank(self) -> Path:
        for path in self.keyring.blanks():
            if path not in self._blanks_given:
                self._blanks_given.add(path)
                return path
        path = self.keyring.add_blanks(1)[0]  # a fresh key out of the drawer
        self._blanks_given.add(path)
        return path


def _reply_to(line: bytes, reply: dict[str, object]) -> dict[str, object]:
    """*reply* with the ``id`` of the instruction *line*, if it has one."""
    with contextlib.suppress(ValueError):
        instruction = json.loads(line)
        if isinstance(instruction, dict) and "id" in instruction:
            reply["id"] = instruction["id"]
    return reply


def _is_reset(line: bytes) -> bool:
    try:
        instruction = json.loads(line)
    except ValueError:
        return False
    return isinstance(instruction, dict) and instruction.get("do") == "reset"


def _number(value: object, what: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    raise InstructionRefused(f"{what} is a number")
