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
from llamasup.cli.commands import completion as completion_commands
from llamasup.cli.commands import control as control_commands
from llamasup.cli.commands import doctor as doctor_commands
from llamasup.cli.commands import imports as import_commands
from llamasup.cli.commands import profiles as profile_commands
from llamasup.cli.commands import runtime as runtime_commands
from llamasup.cli.commands import serve as serve_commands

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

# `llamasup --help` is one screen (24 lines of at most 100 columns; tests/cli/test_help.py):
# the commands by what they are for, then examples. Each command's --help has the detail.
OVERVIEW = """\
Supervise llama.cpp llama-server processes from declarative YAML profiles.

run       quickstart  first run: build llama-server, write a small model, serve (--check: dry run)
          serve       the OpenAI/Anthropic proxy, control API and /metrics on one listener
profiles  validate    check a profile set: exit 0 valid, 1 invalid (file:line: key: message)
          render      the llama-server argv, identity key and defaults of MODEL[@AGENT]
          import      profiles from a llama-swap config.yaml or llama-sidecar's environment
operate   status  plan  logs  unload  reload  restart  apply  diff   a running llamasup (--server)
host      runtime     build or locate llama-server      doctor   check this host
measure   bench       speed of models and flag variants  eval     accuracy on a JSONL suite
shell     completion  print a bash, zsh or fish completion script

examples:
  llamasup quickstart                      llama-server and Gemma 3 270M, then serve ./profiles
  llamasup validate profiles/              every problem, with file and line
  llamasup render qwen3-coder@coder        the llama-server command line, key and defaults
  llamasup status -w                       sidecars, limits and the last reload, redrawn
  llamasup apply -f profiles/ --dry-run    what applying would start and stop
  source <(llamasup completion bash)       complete commands, model ids and agents

options: -h, --help (this help; COMMAND --help: that command's)   --version
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llamasup",
        usage="llamasup [--version] [-h] COMMAND [ARGS]",
        description=OVERVIEW,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    # the options are in OVERVIEW's last line: argparse's own section would be three more
    parser.add_argument("-h", "--help", action="help", help=argparse.SUPPRESS)
    parser.add_argument(
        "--version", action="version", version=f"llamasup {__version__}", help=argparse.SUPPRESS
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", help=argparse.SUPPRESS)
    profile_commands.register(commands)
    import_commands.register(commands)
    serve_commands.register(commands)
    apply_commands.register(commands)
    control_commands.register(commands)
    runtime_commands.register(commands)
    doctor_commands.register(commands)
    bench_commands.register(commands)
    completion_commands.register(commands)
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
