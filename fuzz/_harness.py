"""Shared start-up for the atheris harnesses: import path, instrumentation, libFuzzer main.

Each ``fuzz_*.py`` defines ``test_one_input(data: bytes)`` and calls `run`.  Only the
project's typed errors (``fuzz.targets.EXPECTED``) are caught inside the targets;
anything else escapes, and atheris reports it as a crash with its input saved.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def load_targets():  # type: ignore[no-untyped-def]
    """Import the code under test with atheris coverage instrumentation."""
    import atheris

    with atheris.instrument_imports(include=["ped", "keys", "fuzz"]):
        from fuzz import targets
    return targets


def run(test_one_input: Callable[[bytes], None]) -> None:
    import atheris

    # libFuzzer's -merge=1 re-runs argv[0] through the shell: make that this interpreter
    # on this script, so the harness need not be executable or find the venv itself.
    argv = [f"{shlex.quote(sys.executable)} {shlex.quote(sys.argv[0])}", *sys.argv[1:]]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
