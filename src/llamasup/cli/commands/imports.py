"""Arguments of ``llamasup import llama-swap|sidecar-env`` (run by :mod:`llamasup.cli.imports`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llamasup.cli.commands import LazyHandler


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "import",
        help="write profiles equivalent to a llama-swap config or a llama-sidecar environment",
        description="Migrate to llamasup profiles; every difference is reported as a warning.",
    )
    kinds = parser.add_subparsers(dest="import_kind", metavar="SOURCE", required=True)
    swap = kinds.add_parser(
        "llama-swap",
        help="convert a llama-swap config.yaml",
        description="Convert a llama-swap config.yaml into a profile set.",
    )
    swap.add_argument("config", type=Path, help="llama-swap config.yaml")
    swap.add_argument(
        "--listen", metavar="HOST:PORT", help="server.listen (llama-swap's -listen was a flag)"
    )
    swap.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="the directory llama-swap ran in: its relative paths (./bin/llama-server, "
        "-m models/x.gguf) are written resolved against it (default: the current directory)",
    )
    _common(swap)
    swap.set_defaults(handler=LazyHandler("llamasup.cli.imports:run_import_swap"))
    sidecar = kinds.add_parser(
        "sidecar-env",
        help="convert llama-sidecar's environment (LLAMA_SERVER_BIN, MODEL_DIR_MAP_FILE, ...)",
        description="Convert llama-sidecar's settings, read from the environment or a file.",
    )
    sidecar.add_argument(
        "--env-file", type=Path, help="read the settings from NAME=VALUE lines instead"
    )
    _common(sidecar)
    sidecar.set_defaults(handler=LazyHandler("llamasup.cli.imports:run_import_sidecar"))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        dest="out",
        metavar="PATH",
        help="profile file to write, or DIR/ for one file per model (default: stdout)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite files that exist")
    parser.add_argument("--output", choices=("text", "json"), default="text", help="report format")
