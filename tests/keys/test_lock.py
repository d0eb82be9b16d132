"""The directory write lock: one writer at a time, bounded waiting, nothing changed."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from keys import lock
from keys.colors import Color
from keys.errors import ImageAccessError, TooFewBlankKeys
from keys.keyring import Keyring, duplicate, erase, new_keyset

ROOT = Path(__file__).resolve().parents[2]


def test_a_held_lock_makes_writers_fail_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring = Keyring(tmp_path)
    ring.add_blanks(2)
    (key,) = ring.imprint(new_keyset(Color.BLUE, "SO"))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(lock, "LOCK_TIMEOUT", 0.2)
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another writer (a PED) holds the directory
        with pytest.raises(ImageAccessError, match="busy"):
            erase(key)
        with pytest.raises(ImageAccessError, match="busy"):
            ring.imprint(new_keyset(Color.BLACK, "CO"))
        with pytest.raises(ImageAccessError, match="busy"):
            duplicate(key, ring.blanks()[0])
    finally:
        os.close(fd)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    erase(key)  # free again


def test_threads_cannot_take_the_same_blank(tmp_path: Path) -> None:
    ring = Keyring(tmp_path)
    ring.add_blanks(1)
    results: list[str] = []

    def imprint(label: str) -> None:
        try:
            ring.imprint(new_keyset(Color.BLACK, label))
            results.append("ok")
        except TooFewBlankKeys:
            results.append("no blank")

    threads = [threading.Thread(target=imprint, args=(f"CO{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["no blank", "no blank", "no blank", "ok"]


def test_processes_cannot_take_the_same_blank(tmp_path: Path) -> None:
    Keyring(tmp_path).add_blanks(1)
    script = textwrap.dedent(
        f"""
        import sys
        from keys.colors import Color
        from keys.errors import TooFewBlankKeys
        from keys.keyring import Keyring, new_keyset
        try:
            Keyring({str(tmp_path)!r}).imprint(new_keyset(Color.BLACK, sys.argv[1]))
        except TooFewBlankKeys:
            sys.exit(3)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, f"CO{i}"], cwd=ROOT) for i in range(3)]
    codes = sorted(p.wait(timeout=60) for p in procs)
    assert codes == [0, 3, 3]
    (entry,) = Keyring(tmp_path).keys()
    assert entry.header is not None and entry.header.label.startswith("CO")


_PROBE = textwrap.dedent(
    """
    import sys
    from keys import lock
    from keys.errors import ImageAccessError
    lock.LOCK_TIMEOUT = 0.0  # one try: say what the lock is right now
    try:
        with lock.directory_lock(sys.argv[1]):
            pass
    except ImageAccessError:
        print("busy")
    else:
        print("free")
    """
)


def _seen_from_another_process(directory: Path) -> str:
    """What a second writer (its own process, its own open of the directory) finds."""
    probe = subprocess.run([sys.executable, "-c", _PROBE, str(directory)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=True)
    return probe.stdout.strip()


def test_lock_is_reentrant_in_one_thread_and_released_for_other_processes(
    tmp_path: Path,
) -> None:
    assert _seen_from_another_process(tmp_path) == "free"
    with lock.directory_lock(tmp_path):
        assert _seen_from_another_process(tmp_path) == "busy"
        with lock.directory_lock(tmp_path):  # re-entrant: no deadlock on ourselves
            assert _seen_from_another_process(tmp_path) == "busy"
        # leaving the inner hold must not release the outer one
        assert _seen_from_another_process(tmp_path) == "busy"
    assert _seen_from_another_process(tmp_path) == "free"


def test_lock_is_released_when_the_work_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), lock.directory_lock(tmp_path):
        assert _seen_from_another_process(tmp_path) == "busy"
        raise RuntimeError("the write failed")
    assert _seen_from_another_process(tmp_path) == "free"
