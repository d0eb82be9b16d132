"""Command-line helpers shared by pedserver, pedclient, pedhsm and pedemu.

Users of the commercial product type ``pedserver -mode start -port 1503``; we also accept
``pedserver mode start --port 1503``.  `normalize_luna_argv` turns the first spelling into
the second before argparse sees it: a single-dash *word* that names a command level
(``-mode``, ``-appliance``) becomes a bare word, and any other single-dash word longer
than one letter (``-port``) becomes a double-dash option.  Single-letter options
(``-h``) and negative numbers are left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def normalize_luna_argv(argv: Sequence[str], command_words: Iterable[str]) -> list[str]:
    """Rewrite Luna single-dash spellings into our argparse spellings."""
    commands = set(command_words)
    out: list[str] = []
    for arg in argv:
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            word, eq, value = arg[1:].partition("=")
            if word.lstrip("-").replace(".", "", 1).isdigit():
                out.append(arg)  # a negative number, not an option
            elif word.lower() in commands:
                out.append(word.lower())
            else:
                out.append(f"--{word.lower()}{eq}{value}")
        else:
            out.append(arg)
    return out
