"""Arguments of ``llamasup apply -f PATH`` and ``llamasup diff -f PATH`` (run by
:mod:`llamasup.cli.apply`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llamasup.cli.commands.connection import (
    EXIT_ERROR,
    EXIT_FAILED,
    add_connection_flags,
    connected_handler,
)


def register(commands: Any) -> None:
    apply = commands.add_parser(
        "apply",
        help="send a profile set to a running llamasup and apply it",
        description="Validate, persist and adopt a profile file or directory on a running "
        "llamasup. PATH is the whole set: a served file PATH lacks is removed.",
    )
    _path_flag(apply)
    apply.add_argument("--dry-run", action="store_true", help="validate and plan only")
    add_connection_flags(apply)
    apply.set_defaults(
        handler=connected_handler("llamasup.cli.apply:run_apply"), invalid_exit=EXIT_FAILED
    )

    diff = commands.add_parser(
        "diff",
        help="show what applying a profile set would change; exit 0 none, 1 some, 2 error",
        description="A dry-run apply: the models and sidecars a profile set would change.",
    )
    _path_flag(diff)
    add_connection_flags(diff)
    # like diff(1): 1 means "differs", so an invalid profile set is an error (2)
    diff.set_defaults(
        handler=connected_handler("llamasup.cli.apply:run_diff"),
        dry_run=True,
        invalid_exit=EXIT_ERROR,
    )


def _path_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--file",
        type=Path,
        required=True,
        dest="path",
        metavar="PATH",
        help="profile file, or directory of *.yaml/*.yml files",
    )
