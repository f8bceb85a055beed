"""Arguments of ``llamasup status|plan|logs|unload|reload|restart`` (run by
:mod:`llamasup.cli.control`)."""

from __future__ import annotations

import argparse
from typing import Any

from llamasup.cli.commands.connection import add_connection_flags, connected_handler

WATCH_INTERVAL = 2.0
#: ``status -w`` without SECONDS: redraw on the server's events (``/api/events``)
LIVE = 0.0
RESTART_TIMEOUT = 120.0


def register(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="show the running sidecars and the last reload",
        description="Show llamasup's sidecars, limits and the last profile reload.",
    )
    status.add_argument(
        "-w",
        "--watch",
        nargs="?",
        type=_positive_seconds,
        const=LIVE,
        metavar="SECONDS",
        help="redraw until Ctrl-C: live, as things change (the server's event stream), or "
        "every SECONDS",
    )
    add_connection_flags(status)
    status.set_defaults(handler=connected_handler("llamasup.cli.control:run_status"))

    plan = commands.add_parser(
        "plan",
        help="show what the reconciler would do now",
        description="Show the actions the next reconcile pass would take (changes nothing).",
    )
    add_connection_flags(plan)
    plan.set_defaults(handler=connected_handler("llamasup.cli.control:run_plan"))

    logs = commands.add_parser(
        "logs",
        help="print a sidecar's output (a model's, or one sidecar's by key)",
        description="Print the last lines of a sidecar's output; -f keeps following it.",
    )
    logs.add_argument("name", metavar="NAME", help="model id, alias or sidecar key")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument(
        "-n", "--lines", type=_count, default=100, metavar="LINES", help="lines of history"
    )
    add_connection_flags(logs, output=False)
    logs.set_defaults(handler=connected_handler("llamasup.cli.control:run_logs"))

    unload = commands.add_parser(
        "unload",
        help="stop a model's sidecars (they start again on demand)",
        description="Stop the sidecars of MODEL, the one with --key, or all (--all skips "
        "pinned models). Stopped sidecars start again when a request needs them.",
    )
    target = unload.add_mutually_exclusive_group(required=True)
    target.add_argument("model", nargs="?", metavar="MODEL", help="model id or alias")
    target.add_argument("--key", help="one sidecar, by key")
    target.add_argument("--all", action="store_true", help="every sidecar except pinned ones")
    add_connection_flags(unload)
    unload.set_defaults(handler=connected_handler("llamasup.cli.control:run_unload"))

    reload = commands.add_parser(
        "reload",
        help="re-read the profiles on the server (like SIGHUP)",
        description="Ask llamasup to read its profile path again and adopt it if valid.",
    )
    add_connection_flags(reload)
    reload.set_defaults(handler=connected_handler("llamasup.cli.control:run_reload"))

    restart = commands.add_parser(
        "restart",
        help="restart llamasup in place, keeping the loaded models (like SIGUSR2)",
        description="Restart the running llamasup without reloading its models: it checks "
        "that the installed llamasup starts with its profiles, finishes the requests in "
        "flight, re-executes itself (an upgraded install takes effect; so do server.listen, "
        "ports and state_dir) and adopts every ready sidecar that is still wanted. Clients "
        "connecting meanwhile wait; none is refused.",
    )
    restart.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=RESTART_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the new llamasup to answer (default {RESTART_TIMEOUT:g})",
    )
    restart.add_argument(
        "--no-wait", action="store_true", help="return once the restart is accepted"
    )
    add_connection_flags(restart)
    restart.set_defaults(handler=connected_handler("llamasup.cli.control:run_restart"))


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {value!r}")
    return seconds


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of lines, got {value!r}")
    return int(value)
