"""Atomic replacement: a crash between write and rename leaves the old image intact."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keys import atomic
from keys.colors import Color
from keys.errors import ImageAccessError
from keys.image import KeyImage, load_image, write_image
from keys.keyring import Keyring, new_keyset

ROOT = Path(__file__).resolve().parents[2]


def setup_key(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "key-001.pedkey"
    write_image(path, new_keyset(Color.BLACK, "CO")[0])
    return path, path.read_bytes()


def test_failure_at_rename_keeps_old_image_and_removes_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, before = setup_key(tmp_path)

    def no_rename(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", no_rename)
    with pytest.raises(ImageAccessError, match="No space left"):
        write_image(path, KeyImage.blank())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key-001.pedkey"]


def test_failure_while_writing_keeps_old_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, before = setup_key(tmp_path)
    real_write = os.write

    def half_write(fd: int, data: memoryview) -> int:
        real_write(fd, data[:10])
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic.os, "write", half_write)
    with pytest.raises(ImageAccessError, match="Input/output"):
        write_image(path, KeyImage.blank())
    assert path.read_bytes() == before
    assert len(list(tmp_path.iterdir())) == 1


def test_interrupt_before_rename_keeps_old_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, before = setup_key(tmp_path)

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_image(path, KeyImage.blank())
    assert path.read_bytes() == before
    assert len(list(tmp_path.iterdir())) == 1


def test_hard_crash_between_write_and_rename(tmp_path: Path) -> None:
    """A process killed after writing the temp file and before the rename (os._exit: no
    cleanup runs) leaves the old image intact; the stray temp file is ignored by Keyring
    and a later write succeeds."""
    path, before = setup_key(tmp_path)
    script = textwrap.dedent(
        f"""
        import os
        from keys import atomic
        from keys.image import KeyImage, write_image
        def crash(src, dst):
            os._exit(9)
        atomic.os.replace = crash
        write_image({str(path)!r}, KeyImage.blank())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=60)
    assert result.returncode == 9
    assert path.read_bytes() == before
    leftovers = [p for p in tmp_path.iterdir() if p != path]
    assert len(leftovers) == 1 and atomic.is_temp_name(leftovers[0].name)
    assert leftovers[0].stat().st_size == len(before)  # the new image was fully written
    ring = Keyring(tmp_path)
    assert ring.paths() == [path]
    assert not ring.entries()[0].blank
    write_image(path, KeyImage.blank())
    assert load_image(path).is_blank


def test_temp_file_lives_in_the_target_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append((os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spy)
    target = tmp_path / "k.pedkey"
    write_image(target, KeyImage.blank())
    ((src, dst),) = seen
    assert Path(src).parent == tmp_path and Path(dst) == target
    assert atomic.is_temp_name(Path(src).name)
