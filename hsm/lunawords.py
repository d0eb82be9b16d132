"""LunaSH word matching for pedhsm: case-insensitive, unique-prefix command words and options.

LunaSH reads ``hsm showP``, ``HSM SHOWPOLICIES`` and ``par sh -p example`` as the full
commands they begin: each word matches case-insensitively, and any prefix naming one
command only is that command.  `resolve_words` rewrites such a command line into the
full, lowercase spellings of an argparse tree before argparse reads it, so the parser
keeps its exact names (and its help) and every full spelling works as before.

Two rules beyond "one candidate":
- an exact name always wins (``--ip`` is ``--ip`` even beside ``--ip-something``);
- when every candidate begins with the shortest one, the shortest wins: ``hsm sh`` is
  ``hsm show`` (``showpolicies`` also begins with ``sh``, but to reach it one types
  ``showP``), as LunaSH reads it.
Any other prefix with several candidates is an error that lists them.

Options match the same way among the long options of the command's own parser (``-p``
is ``--partition`` where nothing else begins with ``p``); an option's value is copied as
it is.  A word or option that matches nothing is left for argparse to report.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence

from ped.errors import PedError


class AmbiguousWord(PedError):
    """A prefix that names more than one command or option (the message lists them)."""


def match(
    word: str, names: Iterable[str], *, what: str, dashes: str = "", typed: str | None = None
) -> str | None:
    """The one name *word* stands for (case-insensitive prefix), None when nothing matches.

    *dashes* is put before each candidate in the error, and *typed* is the word as given.
    """
    wanted = word.lower()
    known = sorted(set(names))
    if wanted in known:
        return wanted
    candidates = [n for n in known if n.startswith(wanted)]
    if not candidates:
        return None
    shortest = min(candidates, key=len)
    if all(c.startswith(shortest) for c in candidates):
        return shortest
    listed = ", ".join(f"{dashes}{c}" for c in candidates)
    raise AmbiguousWord(f"ambiguous {what} {typed if typed else repr(word)}: it could be {listed}")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    # argparse keeps its subparsers in a private action type; it is the only way to walk
    # the tree (tests/hsm/test_control.py walks it the same way).
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return dict(parser._option_string_actions)


def _option(token: str, parser: argparse.ArgumentParser) -> tuple[str, argparse.Action | None]:
    """*token* (``-p``, ``--Part=x``) with its option name resolved, and that option."""
    options = _options(parser)
    if token in options:
        return token, options[token]
    name, eq, value = token.lstrip("-").partition("=")
    if not name or name.replace(".", "", 1).isdigit():
        return token, None  # ``--`` or a negative number: not an option
    long_names = {o[2:]: o for o in options if o.startswith("--")}
    found = match(name, long_names, what="option", dashes="--", typed=repr(token))
    if found is None:
        return token, None
    full = long_names[found]
    return f"{full}{eq}{value}" if eq else full, options[full]


def resolve_words(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """*argv* with every command word and option written out in full (see the module)."""
    out: list[str] = []
    current = parser
    words = list(argv)
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":  # the end of the options: the rest is as given
            out += words[i - 1:]
            break
        if word.startswith("-") and len(word) > 1:
            resolved, action = _option(word, current)
            out.append(resolved)
            takes_value = action is not None and action.nargs != 0 and "=" not in resolved
            if takes_value and i < len(words):
                out.append(words[i])
                i += 1
            continue
        subcommands = _subcommands(current)
        if not subcommands:
            out.append(word)
            continue
        found = match(word, subcommands, what="command")
        if found is None:
            out.append(word)  # argparse says "invalid choice" and lists the choices
            continue
        out.append(found)
        current = subcommands[found]
    return out
