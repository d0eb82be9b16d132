"""The argparse pieces every daemon shares: the mode parser, common options, Luna spellings.

Each daemon builds its own parser from these (``mode start/stop/show/config``, ``--home``,
``--config``, ``--idle-timeout``...) and parses with `parse_command_line`, which accepts
Luna's single-dash spellings and answers a call without a mode as Luna does.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from ped.cliutil import add_version_option, normalize_luna_argv
from ped.daemon.config import LOG_LEVELS, ConfigError, ConfigSchema
from ped.daemon.exits import EXIT_USAGE
from ped.daemon.logs import LOG_FORMATS


def no_mode_message(prog: str, modes: Sequence[str]) -> str:
    """What a daemon says when called without a mode (Luna: "You must specify a mode.")."""
    return (
        "You must specify a mode.\n"
        f"Modes: {', '.join(modes)}\n"
        f"Example: {prog} mode {modes[0]}   (Luna spelling: {prog} -mode {modes[0]})\n"
        f"Run '{prog} mode --help' for details."
    )


def mode_parser(
    prog: str, *, description: str, epilog: str, modes: Sequence[str]
) -> tuple[argparse.ArgumentParser, Any, Any]:
    """The daemon's parser, its command sub-parsers (``mode``, then the daemon's own
    nouns) and the ``mode`` sub-parsers (``start``, ``stop``...)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    add_version_option(parser)
    commands = parser.add_subparsers(dest="command", metavar="mode")
    mode = commands.add_parser("mode", help=f"start, stop, show or configure {prog}")
    mode_commands = mode.add_subparsers(dest="mode", metavar="{" + ",".join(modes) + "}")
    return parser, commands, mode_commands


def add_home_options(p: argparse.ArgumentParser, prog: str) -> None:
    """``--home`` and ``--config``/``--configfile``, on every sub-command."""
    p.add_argument("--home", metavar="DIR",
                   help=f"{prog}'s home (default: ${prog.upper()}_HOME or a per-user directory)")
    p.add_argument("--config", "--configfile", metavar="FILE",
                   help="config file (default: HOME/config.toml)")


def home_options(prog: str) -> Callable[[argparse.ArgumentParser], None]:
    """`add_home_options` for *prog*, in the one-argument form sub-parser builders take."""
    return functools.partial(add_home_options, prog=prog)


def add_idle_timeout_option(p: argparse.ArgumentParser) -> None:
    """``--idle-timeout S`` (Luna ``-idletimeout``)."""
    p.add_argument("--idle-timeout", "--idletimeout", dest="idle_timeout", type=int,
                   metavar="S", help="link idle timeout in seconds (default 1800)")


def add_socket_read_rsp_timeout_option(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--socket-read-rsp-timeout S`` (Luna ``-socketreadrsptimeout``)."""
    p.add_argument("--socket-read-rsp-timeout", "--socketreadrsptimeout",
                   dest="socket_read_rsp_timeout", type=int, metavar="S", help=help_text)


def add_log_level_option(p: argparse.ArgumentParser) -> None:
    """``--log-level L`` (Luna ``-loglevel``)."""
    p.add_argument("--log-level", "--loglevel", dest="log_level", choices=list(LOG_LEVELS))


def add_log_format_option(p: argparse.ArgumentParser) -> None:
    """``--log-format text|json``: one JSON object per line for a log collector."""
    p.add_argument("--log-format", "--logformat", dest="log_format", choices=list(LOG_FORMATS),
                   default="text",
                   help="log lines as text (default) or one JSON object per line")


def add_foreground_option(p: argparse.ArgumentParser) -> None:
    """``--foreground``/``-f``: serve in this process instead of going to the background."""
    p.add_argument("--foreground", "-f", action="store_true",
                   help="stay in the foreground, logging to stderr")


def add_stop_show_parsers(
    modes: Any, prog: str, *, stop_help: str, show_help: str
) -> None:
    """``mode stop`` and ``mode show [--json]``."""
    stop = modes.add_parser("stop", help=stop_help)
    add_home_options(stop, prog)
    show = modes.add_parser("show", help=show_help)
    add_home_options(show, prog)
    show.add_argument("--json", action="store_true", help="machine-readable output")


def add_config_parser(modes: Any, prog: str) -> None:
    """``mode config (--show | --create | --set KEY VALUE...)``, Luna's ``-reset`` and
    ``-set -KEY VALUE`` too (`luna_config_set` rewrites the latter)."""
    config = modes.add_parser("config", help="show, recreate or change the config file")
    add_home_options(config, prog)
    what = config.add_mutually_exclusive_group(required=True)
    what.add_argument("--show", action="store_true", help="print the settings in effect")
    what.add_argument("--create", "--reset", action="store_true",
                      help="write the default config (the old one is kept as .bak); "
                      "Luna: -reset")
    what.add_argument("--set", nargs=2, action="append", metavar=("KEY", "VALUE"),
                      help="change a setting; give it again for more. Luna spelling: "
                      "-set -idletimeout 900 [-port 1503 ...] (a key as an option, "
                      "without its underscores)")


#: The options of ``mode config`` itself: never read as a config key after ``--set``.
_CONFIG_OPTIONS = frozenset({"--home", "--config", "--configfile", "--show", "--create",
                             "--reset", "--set", "--help"})


def luna_config_set(args: Sequence[str]) -> list[str]:
    """Rewrite Luna's ``mode config --set --KEY VALUE [--KEY VALUE...]`` (after
    `normalize_luna_argv`) into ``--set KEY VALUE`` once per key; other lines unchanged."""
    if args[:2] != ["mode", "config"] or "--set" not in args:
        return list(args)
    out: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        out.append(arg)
        if arg != "--set":
            continue
        first = True
        while rest and rest[0].startswith("--") and rest[0].partition("=")[0] not in (
                _CONFIG_OPTIONS):
            key, eq, value = rest.pop(0)[2:].partition("=")
            if not eq:
                if not rest:
                    out.extend(([] if first else ["--set"]) + [key])  # argparse says why
                    break
                value = rest.pop(0)
            out.extend(([] if first else ["--set"]) + [key, value])
            first = False
    return out


def parse_command_line(
    argv: Sequence[str] | None,
    *,
    prog: str,
    modes: Sequence[str],
    command_words: Sequence[str],
    parser: argparse.ArgumentParser,
    err: TextIO,
) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code when there is nothing to run (usage/help)."""
    raw = list(sys.argv[1:] if argv is None else argv)
    args_list = luna_config_set(normalize_luna_argv(raw, tuple(command_words)))
    if not args_list or args_list == ["mode"]:
        err.write(no_mode_message(prog, modes) + "\n")
        return EXIT_USAGE
    try:
        return parser.parse_args(args_list)
    except SystemExit as exc:
        return int(exc.code or 0)


def command_line_problem(schema: ConfigSchema, values: Mapping[str, Any]) -> str | None:
    """What is wrong with the settings given on the command line (a port of 70000), or
    None: a bad command line is a usage error (exit 2), a bad config file is not."""
    try:
        schema.merge({}, values)
    except ConfigError as exc:
        return str(exc)
    return None


def cli_overrides(args: argparse.Namespace, overrides: Mapping[str, str]) -> dict[str, Any]:
    """Config key -> the value given on the command line (None where it was not given)."""
    return {key: getattr(args, dest) for dest, key in overrides.items()}
