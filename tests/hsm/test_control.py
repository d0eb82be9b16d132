"""The control table (`hsm.control`): one row per shell command, arguments checked in order."""

from __future__ import annotations

import argparse

import pytest

from hsm import cli, control, shellparser
from hsm.errors import InvalidCommand


def _shell_commands(parser: argparse.ArgumentParser) -> set[str]:
    found: set[str] = set()
    command = parser.get_default("command")
    if command:
        found.add(command)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _shell_commands(sub)
    return found


def test_every_shell_command_has_a_row_and_every_row_a_shell_command() -> None:
    shell = {c for c in _shell_commands(shellparser.build_parser()) if not c.startswith("mode.")}
    shell.discard(cli.LOCAL_SELECT)
    shell.discard("ntls.show")  # the daemon's own, as mode.*: it shows the listener
    assert shell == set(control.BY_NAME)
    assert set(shellparser.LONG_COMMANDS) <= set(control.BY_NAME)


def test_arguments_are_checked_in_order_with_the_shells_messages() -> None:
    role_init = control.BY_NAME["role.init"]
    with pytest.raises(InvalidCommand, match="--partition is required"):
        [parse({}) for parse in role_init.args]
    with pytest.raises(InvalidCommand, match="challenge is not hex"):
        [parse({"partition": "p", "name": "co", "challenge": "zz"}) for parse in role_init.args]
    with pytest.raises(InvalidCommand, match="--policy needs a whole number"):
        [parse({"policy": True}) for parse in control.BY_NAME["hsm.changepolicy"].args]
    # object.create reads its value first
    with pytest.raises(InvalidCommand, match="value is not hex"):
        [parse({"value": "x"}) for parse in control.BY_NAME["object.create"].args]
