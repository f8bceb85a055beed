"""The ``llamasup`` command line: argument parsing and output only."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from llamasup import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamasup",
        description="Supervise llama.cpp llama-server processes from declarative YAML profiles.",
    )
    parser.add_argument("--version", action="version", version=f"llamasup {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return 0


def entrypoint() -> None:
    sys.exit(main())
