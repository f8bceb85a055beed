"""What every control command shares before it runs: its exit codes (see
:mod:`llamasup.cli.control`), the connection flags and their defaults, and the lazy handler
that opens the client (:mod:`llamasup.cli.client`)."""

from __future__ import annotations

import argparse

from llamasup.cli.commands import LazyHandler

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2

SERVER_ENV = "LLAMASUP_SERVER"
API_KEY_ENV = "LLAMASUP_API_KEY"
DEFAULT_SERVER = "http://127.0.0.1:8402"


def connected_handler(target: str) -> LazyHandler:
    """The handler ``target(args, client)``, called with the client open (exit 2 if it fails)."""
    return LazyHandler(target, wrapper="llamasup.cli.client:connected")


def add_connection_flags(parser: argparse.ArgumentParser, *, output: bool = True) -> None:
    parser.add_argument(
        "--server",
        metavar="URL",
        help=f"llamasup to talk to (default: ${SERVER_ENV}, else server.listen of the local "
        f"profiles, else {DEFAULT_SERVER})",
    )
    parser.add_argument("--api-key", metavar="KEY", help=f"admin API key (default: ${API_KEY_ENV})")
    if output:
        parser.add_argument(
            "-o",
            "--output",
            choices=("table", "text", "json"),
            default="table",
            help="output format (text = table)",
        )
