"""Scripts for the emulated PED's `script:` operator, written the way a PED operator acts.

Every HSM command that needs the PED opens one session: the handshake (local mode: the
PED asks "Allow?"; remote mode: the orange key) and then the operation's prompts.
"""

from __future__ import annotations

from pathlib import Path

from keys import Keyring, new_keyset
from keys.colors import Color


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
            self.parts.append(step("Allow", press="YES"))
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
    """Blank keys, plus a stranger's blue key and (if *rpv*) an orange key holding it."""
    path.mkdir(parents=True, exist_ok=True)
    ring = Keyring(path)
    extra = {}
    [stranger] = ring.imprint(new_keyset(Color.BLUE, "someone else", 1, 1), create=True)
    extra["stranger"] = stranger.name
    if rpv is not None:
        [orange] = ring.imprint(new_keyset(Color.ORANGE, "RPV", 1, 1, secret=rpv), create=True)
        extra["orange"] = orange.name
    names = [p.name for p in ring.add_blanks(blanks)]  # after: imprint() takes blanks first
    return names, extra
