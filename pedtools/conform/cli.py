"""``pedconform``: the command line of the conformance kits (``ped`` and ``hsm``).

Each suite module offers ``add_arguments(parser)`` and ``run(args) -> int``; this module
only builds the command line, so the two suites stay independent of each other.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from ped.cliutil import add_version_option

#: subcommand -> (suite module, one-line help)
SUITES: dict[str, tuple[str, str]] = {
    "ped": ("pedtools.conform.ped_suite",
            "check a PED (device transport, end-to-end channel, every operation)"),
    "hsm": ("pedtools.conform.hsm_suite",
            "check an HSM's side: offer it a PED whose faults are chosen per case"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pedconform",
        description="Conformance kits for PED and HSM makers: numbered cases, each citing "
                    "the section of the protocol documents it checks; a table and a JSON "
                    "report; exit 0 only when every required case passes.",
    )
    add_version_option(parser)
    sub = parser.add_subparsers(dest="suite", required=True, metavar="{ped,hsm}")
    for name, (module_name, help_text) in SUITES.items():
        suite_parser = sub.add_parser(name, help=help_text, description=help_text)
        add_version_option(suite_parser)
        module = importlib.import_module(module_name)
        module.add_arguments(suite_parser)
        suite_parser.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
