"""``hsmclient slot list``'s table: the state column says when a partition's activation
survives a restart of its HSM (auto-activation), and says nothing when that is unknown."""

from __future__ import annotations

from hsmclient.commands_slots import format_slots
from hsmclient.daemon import SlotLine


def test_auto_activation_is_shown_only_when_known_on() -> None:
    table = format_slots([
        SlotLine(0, "hsm1", "1500010001", "app", "ready", True),
        SlotLine(1, "hsm1", "1500010002", "other", "ready", False),
        SlotLine(2, "old", "1500020001", "legacy", "ready"),  # a version-1 pedhsm
    ])
    lines = table.splitlines()
    assert lines[1].endswith("ready, auto-activation")
    assert lines[2].endswith("ready") and lines[3].endswith("ready")


def test_a_row_from_an_older_daemons_json_still_reads() -> None:
    row = {"slot_id": 3, "server": "s", "serial": "1", "label": "l", "state": "not activated"}
    assert SlotLine(**row).state_words() == "not activated"
