"""Arguments of ``llamasup validate`` and ``llamasup render``, run by
:mod:`llamasup.cli.profiles`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llamasup.cli.commands import LazyHandler


def add_output_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "table", "json"),
        default="text",
        help="output format (table = text)",
    )


def register(commands: Any) -> None:
    validate = commands.add_parser(
        "validate",
        help="check a profile set; exit 0 valid, 1 invalid, 2 usage",
        description="Check a profile file or directory and report every problem found.",
    )
    validate.add_argument("path", nargs="?", type=Path, help="profile file or directory")
    validate.add_argument(
        "--check-host",
        action="store_true",
        help="also check this host can start every model: its llama-server binary (or "
        "command) resolves and is executable, its model file exists and is readable, API key "
        "values are readable (errors here; without the flag a missing model file or key "
        "value is a warning and binaries are not looked for)",
    )
    add_output_flag(validate)
    validate.set_defaults(handler=LazyHandler("llamasup.cli.profiles:run_validate"))

    render = commands.add_parser(
        "render",
        help="show the llama-server command line a model (and agent) resolves to",
        description="Show argv, identity key, environment and request defaults of MODEL[@AGENT].",
    )
    render.add_argument("target", metavar="MODEL[@AGENT]")
    render.add_argument("-f", "--file", type=Path, dest="path", help="profile file or directory")
    render.add_argument("--agent", help="agent overlay (instead of @AGENT)")
    add_output_flag(render)
    render.set_defaults(handler=LazyHandler("llamasup.cli.profiles:run_render"))
