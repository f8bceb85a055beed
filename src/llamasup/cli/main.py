"""The ``llamasup`` command line: argument parsing and dispatch; output lives in ``cli_*``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from llamasup import __version__
from llamasup.cli import control as cli_control
from llamasup.cli import doctor as cli_doctor
from llamasup.cli import imports as cli_import
from llamasup.cli import profiles as cli_profiles
from llamasup.cli import runtime as cli_runtime
from llamasup.cli import serve as cli_serve

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamasup",
        description="Supervise llama.cpp llama-server processes from declarative YAML profiles.",
    )
    parser.add_argument("--version", action="version", version=f"llamasup {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    cli_profiles.register(commands)
    cli_import.register(commands)
    cli_serve.register(commands)
    cli_control.register(commands)
    cli_runtime.register(commands)
    cli_doctor.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help/--version
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    code: int = args.handler(args)
    return code


def entrypoint() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (``llamasup status | head``): not an error worth a traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_OK
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
