"""``llamasup completion bash|zsh|fish`` and the hidden ``llamasup __complete`` helper.

The scripts are generated from the parser itself (:mod:`llamasup.cli.completion_tree`), so a
new subcommand or option completes without editing them. What varies per host, the model ids
and agents of the local profile set, is asked at completion time from ``llamasup __complete
models|agents [PATH]``, which reads only those names
(:func:`llamasup.profiles.discover.read_names`).
"""

from __future__ import annotations

import argparse
import sys

from llamasup._version import __version__
from llamasup.cli.completion_scripts import render
from llamasup.cli.completion_tree import command_tree
from llamasup.cli.main import build_parser
from llamasup.profiles.discover import default_profile_path, read_names

EXIT_OK = 0


def run_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(render(args.shell, command_tree(build_parser()), __version__))
    return EXIT_OK


def run_complete(args: argparse.Namespace) -> int:
    """Print one model id (or alias) or agent name per line; nothing when there is none."""
    models, agents = read_names(args.path or default_profile_path())
    for name in models if args.kind == "models" else agents:
        print(name)
    return EXIT_OK
