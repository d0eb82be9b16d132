"""Scripts for the emulated PED's `script:` operator, written the way a PED operator acts.

Every HSM command that needs the PED opens one session: the handshake (local mode: the
PED asks to allow a cabled HSM without an orange key; remote mode: the orange key) and
then the operation's prompts.
"""

from __future__ import annotations

from pathlib import Path

import trio

from hsm.clock import ManualClock
from hsm.crypto import MasterKey
from hsm.engine import Hsm
from hsm.linkloss import LinkLoss
from hsm.pedlink import PedRouter
from hsm.store import Store
from keys import Keyring, new_keyset
from keys.colors import Color
from ped.device.emulated.script import ScriptOperator, load_script
from ped.device.emulated.server import EmulatedPed
from pedtools.fakes.inprocess import InProcessPedDriver


def step(expect: str | None = None, **actions: object) -> str:
    lines = ["[[step]]"]
    if expect is not None:
        lines.append(f'expect = "{expect}"')
    for name, value in actions.items():
        if isinstance(value, bool):
            lines.append(f"{name} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{name} = {value}")
        else:
            lines.append(f'{name} = "{value}"')
    return "\n".join(lines) + "\n"


class Script:
    """Builds a script; `orange` names the orange key when the PED runs in remote mode."""

    def __init__(self, orange: str | None = None) -> None:
        self.parts: list[str] = []
        self.orange = orange

    def text(self) -> str:
        return "[settings]\ntimeout = 20\n\n" + "\n".join(self.parts)

    def write(self, path: Path) -> Path:
        path.write_text(self.text())
        return path

    def session(self) -> Script:
        if self.orange is None:
            self.parts.append(step("connecting locally|locally", press="YES"))
        else:
            self.parts.append(step("Insert a ORANGE", insert=self.orange))
        return self

    def imprint(self, blank: str, pin: str | None = None) -> Script:
        self.parts.append(step("Reuse an existing", press="NO"))
        self.parts.append(step("M value", pin="1"))
        self.parts.append(step("N value", pin="1"))
        if pin:
            self.parts.append(step("New PED PIN", pin=pin))
            self.parts.append(step("Confirm new PED PIN", pin=pin))
        else:
            self.parts.append(step("New PED PIN", press="ENTER"))
        self.parts.append(step("duplicating", press="NO"))
        self.parts.append(step("Insert a blank key", insert=blank))
        return self

    def read(self, color: Color, key: str, pin: str | None = None) -> Script:
        self.parts.append(step(f"Insert a {color.label.upper()} PED key", insert=key))
        if pin:
            self.parts.append(step("Enter PED PIN", pin=pin))
        return self

    def show(self) -> Script:
        return self  # a show needs no operator action


def make_keyring(
    path: Path, blanks: int = 12, rpv: bytes | None = None
) -> tuple[list[str], dict[str, str]]:
    """Blank keys, a stranger's blue, white and black keys, and (if *rpv*) an orange key
    holding it."""
    path.mkdir(parents=True, exist_ok=True)
    ring = Keyring(path)
    extra = {}
    for color in (Color.BLUE, Color.WHITE, Color.BLACK):
        [stranger] = ring.imprint(new_keyset(color, "someone else", 1, 1), create=True)
        extra[f"stranger-{color.label}"] = stranger.name
    extra["stranger"] = extra["stranger-blue"]
    if rpv is not None:
        [orange] = ring.imprint(new_keyset(Color.ORANGE, "RPV", 1, 1, secret=rpv), create=True)
        extra["orange"] = orange.name
    names = [p.name for p in ring.add_blanks(blanks)]  # after: imprint() takes blanks first
    return names, extra


class Bench:
    def __init__(self, tmp: Path, nursery: trio.Nursery) -> None:
        self.tmp = tmp
        self.nursery = nursery
        self.keys = tmp / "keys"
        self.blanks, self.extra = make_keyring(self.keys)
        self.home = tmp / "home"
        self.home.mkdir(mode=0o700)
        self.notes: list[str] = []
        self.clock = ManualClock()
        self.store = Store(self.home)
        self.master = MasterKey.load_or_create(self.home)
        self.ped = EmulatedPed(self.keys, mode="local")
        self.router = PedRouter(
            local_uri="inprocess:",
            pedclient_socket=None,
            serial="150002",
            timeouts=lambda: {"rped": 1800, "pedk": 200, "pedo": 920},
            on_drop=self._dropped,
            driver_factory=lambda uri: InProcessPedDriver(self.ped, nursery),
        )
        self.hsm = Hsm(self.home, self.store, self.master, self.clock, self.router, "150002")
        self.hsm.power_on()
        self.operator: ScriptOperator | None = None
        self.drops: list[str] = []
        self.dropped = trio.Event()

    def _dropped(self, loss: LinkLoss) -> None:
        self.hsm.ped.link_dropped(loss)
        self.drops.append(f"{loss.sentence}: {loss.end.detail}")
        self.dropped.set()

    def run_script(self, script: Script) -> ScriptOperator:
        path = script.write(self.tmp / f"script{len(self.notes)}.toml")
        operator = ScriptOperator(self.ped.panel, load_script(path, self.keys))
        self.nursery.start_soon(operator.run)
        self.operator = operator
        return operator

    def notify(self, text: str) -> None:
        self.notes.append(text)
