"""hsmclient.slots: slot ids assigned once, persistent, never reused or shifted."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from hsmclient.slots import SLOTS_FILE, SlotMap, SlotMapError


def test_ids_are_assigned_on_first_sight_from_0_and_kept(tmp_path: Path) -> None:
    slots = SlotMap(tmp_path)
    assert slots.where(0) is None  # nothing yet, and no file made for a read
    assert not (tmp_path / SLOTS_FILE).exists()
    assert slots.slot_for("hsm1", "1001") == 0
    assert slots.slot_for("hsm1", "1002") == 1
    assert slots.slot_for("hsm2", "1001") == 2  # the same serial on another server
    assert slots.slot_for("hsm1", "1001") == 0  # seen again: the same id
    assert SlotMap(tmp_path).slot_for("hsm1", "1002") == 1  # persistent
    assert SlotMap(tmp_path).where(2) == ("hsm2", "1001")
    assert stat.S_IMODE((tmp_path / SLOTS_FILE).stat().st_mode) == 0o600


def test_the_file_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        SlotMap(tmp_path).slot_for("hsm1", "1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / SLOTS_FILE).stat().st_mode) == 0o600


def test_a_deleted_server_retires_its_ids_and_nothing_shifts(tmp_path: Path) -> None:
    slots = SlotMap(tmp_path)
    a = slots.slot_for("hsm1", "1001")
    b = slots.slot_for("hsm2", "2001")
    c = slots.slot_for("hsm1", "1002")
    assert slots.forget_server("hsm1") == 2
    assert slots.forget_server("hsm1") == 0
    assert slots.where(a) is None and slots.where(c) is None
    assert slots.where(b) == ("hsm2", "2001")  # the others keep theirs
    assert slots.slot_for("hsm2", "2002") == 3  # retired ids are never given again
    assert slots.slot_for("hsm3", "1001") == 4
    # The same server and serial seen again: its old id back, never a new meaning.
    assert slots.slot_for("hsm1", "1001") == a
    assert slots.where(a) == ("hsm1", "1001")
    entries = slots.entries()
    assert [(e.slot_id, e.retired) for e in entries] == [
        (0, False), (1, False), (2, True), (3, False), (4, False)]


def test_concurrent_writers_never_share_an_id(tmp_path: Path) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def assign(server: str) -> None:
        for n in range(20):
            slot = SlotMap(tmp_path).slot_for(server, str(n))
            with lock:
                got.append(slot)

    threads = [threading.Thread(target=assign, args=(f"hsm{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(80))


def test_a_damaged_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / SLOTS_FILE).write_bytes(b"not a database" * 100)
    with pytest.raises(SlotMapError, match="restore it from a backup"):
        SlotMap(tmp_path).slot_for("hsm1", "1")
    assert "SlotMap(" in repr(SlotMap(tmp_path))
