"""The ``llamasup`` command line: the parser, and dispatch to the chosen subcommand's handler.

Building the parser imports only :mod:`llamasup.cli.commands` (the arguments), so
``--version``, ``--help`` and usage errors answer without importing the service; a handler's
module (``llamasup.cli.serve``, ``llamasup.cli.control``, ...) is imported when its subcommand
runs, and prints that subcommand's output.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from llamasup._version import __version__
from llamasup.cli.commands import apply as apply_commands
from llamasup.cli.commands import bench as bench_commands
from llamasup.cli.commands import control as control_commands
from llamasup.cli.commands import doctor as doctor_commands
from llamasup.cli.commands import imports as import_commands
from llamasup.cli.commands import profiles as profile_commands
from llamasup.cli.commands import runtime as runtime_commands
from llamasup.cli.commands import serve as serve_commands

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
    profile_commands.register(commands)
    import_commands.register(commands)
    serve_commands.register(commands)
    apply_commands.register(commands)
    control_commands.register(commands)
    runtime_commands.register(commands)
    doctor_commands.register(commands)
    bench_commands.register(commands)
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
