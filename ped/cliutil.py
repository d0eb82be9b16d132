"""Command-line helpers shared by pedserver, pedclient, pedhsm and pedemu: Luna's
single-dash spellings and ``--version``.

Users of the commercial product type ``pedserver -mode start -port 1503``; we also accept
``pedserver mode start --port 1503``.  `normalize_luna_argv` turns the first spelling into
the second before argparse sees it: a single-dash *word* that names a command level
(``-mode``, ``-appliance``) becomes a bare word, and any other single-dash word longer
than one letter (``-port``) becomes a double-dash option.  Single-letter options
(``-h``) and negative numbers are left alone.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from importlib import metadata

#: The distribution the programs come from (pyproject.toml's ``name``).
DISTRIBUTION = "remote-ped"


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


def project_version() -> str:
    """The installed version of the project (``unknown`` when run from a bare checkout)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """``--version`` (Luna ``-version``): print ``PROG VERSION`` and exit 0."""
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {project_version()} (Remote PED)")
