"""pedserver writes the PED's event lines on its next turn, in order, never dropping one."""

from __future__ import annotations

import logging

import trio
import trio.testing

from ped.device import DeviceEvent, EventKind
from pedserver import events as events_module
from pedserver.server import PedServer
from pedserver.settings import Settings
from tests.pedserver.fakes import FakeDriver, running_pair


def _read(n: int) -> DeviceEvent:
    return DeviceEvent(0, EventKind.KEY_READ, 1, f"ks-{n}", "ok", f"key {n} of 9")


def _lines(caplog: object) -> list[str]:
    return [r.getMessage() for r in caplog.records  # type: ignore[attr-defined]
            if r.name == "pedserver" and "key-read" in r.getMessage()]


async def test_event_lines_follow_on_the_next_turn_in_order(home, caplog):
    caplog.set_level(logging.INFO)
    async with running_pair(home) as pair:
        for n in range(1, 4):
            pair.driver.on_event(_read(n))
        # Not on the caller's path (the driver is dispatching the PED's frames)...
        assert _lines(caplog) == []
        await trio.testing.wait_all_tasks_blocked()
        # ...but written on the logger's next turn, in the order the PED sent them.
        assert _lines(caplog) == [f"PED: PED key-read blue keyset ks-{n} key {n} of 9 result ok"
                                  for n in range(1, 4)]


async def test_a_long_queue_is_written_at_once(home, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(events_module, "EVENT_LINES_MAX", 3)
    async with running_pair(home) as pair:
        for n in range(1, 5):
            pair.driver.on_event(_read(n))
        assert len(_lines(caplog)) == 4  # the fourth went past the bound: all written


async def test_without_a_running_server_lines_are_written_at_once(caplog):
    caplog.set_level(logging.INFO)
    driver = FakeDriver()
    PedServer(Settings(ip="127.0.0.1", port=0, device=driver.uri), driver)
    driver.on_event(_read(1))
    assert _lines(caplog) == ["PED: PED key-read blue keyset ks-1 key 1 of 9 result ok"]


async def test_queued_lines_are_written_when_the_server_stops(home, caplog):
    caplog.set_level(logging.INFO)
    async with running_pair(home) as pair:
        pair.driver.on_event(_read(1))
        pair.server.request_stop("test over")
    assert _lines(caplog) == ["PED: PED key-read blue keyset ks-1 key 1 of 9 result ok"]


async def test_a_refused_key_names_the_colour_asked_and_the_keyset_presented(caplog):
    """Issue 15: an orange key refused at a blue login was logged as
    "key-refused blue keyset <id of the orange key>"."""
    caplog.set_level(logging.INFO)
    driver = FakeDriver()
    PedServer(Settings(ip="127.0.0.1", port=0, device=driver.uri), driver)
    driver.on_event(DeviceEvent(0, EventKind.KEY_REFUSED, 1, "0a0b", "wrong-colour"))
    driver.on_event(DeviceEvent(0, EventKind.KEY_REFUSED, 1, "", "blank"))
    lines = [r.getMessage() for r in caplog.records if "key-refused" in r.getMessage()]
    assert lines == [
        "PED: PED key-refused: wanted blue, result wrong-colour; the key presented is of "
        "keyset 0a0b",
        "PED: PED key-refused: wanted blue, result blank",
    ]
    assert "blue keyset" not in " ".join(lines)
