"""``llamasup status|plan|logs|unload|reload|restart``: clients of a running llamasup's control API
(``apply|diff`` are :mod:`llamasup.cli.apply`).

Exit codes: 0 done, 1 the server said no for a reason about the request (unknown model,
rejected reload), 2 the command could not be carried out (unreachable, key refused, usage).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from llamasup.cli.client import (
    ControlClient,
    emit_json,
    error_message,
    fail,
    unexpected,
)
from llamasup.cli.commands.connection import EXIT_FAILED, EXIT_OK
from llamasup.cli.commands.control import LIVE, WATCH_INTERVAL
from llamasup.cli.table import cell, issue_text, plan_lines, table
from llamasup.core.units import format_bytes, format_duration

ERROR_WIDTH = 40
CLEAR_SCREEN = "\x1b[H\x1b[2J"

#: ``status --watch SECONDS`` sleeps with this (tests replace it to end the loop)
sleep: Callable[[float], None] = time.sleep


# -- status ------------------------------------------------------------------------------------


def run_status(args: argparse.Namespace, client: ControlClient) -> int:
    if args.watch is None:
        return _status_once(args, client, clear=False)
    clear = sys.stdout.isatty()
    try:
        if args.watch == LIVE:
            code = _status_live(args, client, clear=clear)
            if code is not None:
                return code
            args.watch = WATCH_INTERVAL  # a llamasup without /api/events: poll it
        while True:
            code = _status_once(args, client, clear=clear)
            if code != EXIT_OK:
                return code
            _frame_done(clear)
            sleep(args.watch)
    except KeyboardInterrupt:
        return EXIT_OK


def _status_live(args: argparse.Namespace, client: ControlClient, *, clear: bool) -> int | None:
    """Redraw on every ``status`` event of ``/api/events`` (after each change, and every 2 s),
    reconnecting when the stream ends (a planned restart ends it); None when the server has
    no event stream to give (then the caller polls)."""
    while True:
        with client.stream("/api/events") as response:
            if response.status_code in (404, 503):
                return None
            if response.status_code != 200:
                return unexpected(args, response)
            event = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: ") and event == "status":
                    _draw(args, json.loads(line[len("data: ") :]), clear=clear)
                    _frame_done(clear)
                elif not line:
                    event = ""


def _frame_done(clear: bool) -> None:
    if not clear:
        print()
    sys.stdout.flush()


def _status_once(args: argparse.Namespace, client: ControlClient, *, clear: bool) -> int:
    response = client.request("GET", "/api/status")
    if response.status_code != 200:
        return unexpected(args, response)
    _draw(args, response.json(), clear=clear)
    return EXIT_OK


def _draw(args: argparse.Namespace, doc: Mapping[str, Any], *, clear: bool) -> None:
    if args.output == "json":
        emit_json(doc)
        return
    lines = status_lines(doc, time.time())
    print((CLEAR_SCREEN if clear else "") + "\n".join(lines))


def status_lines(doc: Mapping[str, Any], now: float) -> list[str]:
    profiles = doc["profiles"]
    reload = profiles["last_reload"]
    lines = [
        f"llamasup {doc['version']} at {doc['listen']}: profiles {profiles['source']} "
        f"revision {profiles['revision']}",
        f"last reload: {reload['result']} ({reload['trigger']}, "
        f"{format_duration(max(0.0, now - reload['at']))} ago)",
    ]
    lines += [f"  error: {issue_text(issue)}" for issue in reload["errors"]]
    lines += [f"warning: {issue_text(issue)}" for issue in profiles["warnings"]]
    watch = profiles.get("watch") or {}
    if watch.get("state") == "lost":
        lines.append(
            f"watch lost: {watch['error']} (edits are not seen until it is back; "
            "`llamasup reload` reads them now)"
        )
    if profiles.get("auth_error"):
        lines.append(f"api keys: {profiles['auth_error']}")
    if profiles.get("restart_needed"):
        names = ", ".join(profiles["restart_needed"])
        lines.append(f"restart needed: server settings {names} changed")
    lines.append(_limits_line(doc["limits"]))
    rows = [_sidecar_row(row) for row in doc["sidecars"]]
    lines.append("")
    if not rows:
        lines.append("no sidecars")
    else:
        lines += table(SIDECAR_HEADERS, rows)
    return lines


SIDECAR_HEADERS = (
    "MODEL",
    "AGENTS",
    "KEY",
    "STATE",
    "PID",
    "PORT",
    "UPTIME",
    "IN-FLIGHT",
    "WAITING",
    "RESTARTS",
    "MEMORY",
    "LAST ERROR / DRAIN",
)


def _sidecar_row(row: Mapping[str, Any]) -> list[str]:
    state = row["state"]
    if row.get("pinned"):
        state += " (pinned)"
    if row.get("adopted_at") is not None:
        state += " (adopted)"
    if row.get("gave_up"):
        state += " (gave up)"
    memory = row.get("memory")
    return [
        cell(row["model"]),
        cell(row.get("agents")),
        cell(row["key"]),
        state,
        cell(row.get("pid")),
        cell(row.get("port")),
        format_duration(row.get("uptime")),
        str(row.get("in_flight", 0)),
        _waiting(row),
        str(row.get("restarts", 0)),
        cell(None if memory is None else format_bytes(memory)),
        cell(row.get("drain") or row.get("last_error"), ERROR_WIDTH),
    ]


def _waiting(row: Mapping[str, Any]) -> str:
    """``3 (12s)``: requests waiting for this sidecar, and how long the oldest has waited."""
    count = row.get("waiting") or 0
    oldest = row.get("oldest_wait")
    return str(count) if not count or oldest is None else f"{count} ({format_duration(oldest)})"


def _limits_line(limits: Mapping[str, Any]) -> str:
    most = limits.get("max_sidecars")
    running = f"{limits['running']} running" + ("" if most is None else f" of at most {most}")
    memory = format_bytes(limits.get("memory_estimated") or 0)
    budget = limits.get("memory_budget")
    if budget is not None:
        memory += f" of {format_bytes(budget)}"
    devices = limits.get("devices") or {}
    for name, row in devices.items():
        memory += f"; {name} {format_bytes(row['estimated'])} of {format_bytes(row['budget'])}"
    return f"sidecars: {running}; estimated memory {memory}"


# -- plan --------------------------------------------------------------------------------------


def run_plan(args: argparse.Namespace, client: ControlClient) -> int:
    response = client.request("GET", "/api/plan")
    if response.status_code != 200:
        return unexpected(args, response)
    doc = response.json()
    if args.output == "json":
        emit_json(doc)
        return EXIT_OK
    print("\n".join(plan_lines(doc["actions"])))
    return EXIT_OK


# -- logs --------------------------------------------------------------------------------------


def run_logs(args: argparse.Namespace, client: ControlClient) -> int:
    params = {"lines": str(args.lines)}
    if args.follow:
        params["follow"] = "1"
    path = "/api/logs/" + _quote(args.name)
    try:
        # only a followed log may wait for output forever; a tail answers at once
        with client.stream(path, params=params, follow=args.follow) as response:
            if response.status_code == 404:
                fail(args, error_message(response), EXIT_FAILED)
                return EXIT_FAILED
            if response.status_code != 200:
                return unexpected(args, response)
            for line in response.iter_lines():
                print(line, flush=True)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def _quote(name: str) -> str:
    from urllib.parse import quote  # noqa: PLC0415 - only logs needs it

    return quote(name, safe="")


# -- unload ------------------------------------------------------------------------------------


def run_unload(args: argparse.Namespace, client: ControlClient) -> int:
    if args.all:
        body: dict[str, object] = {"all": True}
    elif args.key:
        body = {"key": args.key}
    else:
        body = {"model": args.model}
    response = client.request("POST", "/api/unload", json=body)
    if response.status_code == 404:
        fail(args, error_message(response), EXIT_FAILED)
        return EXIT_FAILED
    if response.status_code != 200:
        return unexpected(args, response)
    doc = response.json()
    if args.output == "json":
        emit_json(doc)
        return EXIT_OK
    for item in doc["stopped"]:
        print(f"stopped {item['key']} ({item['model']})")
    for item in doc["skipped"]:
        print(f"skipped {item['key']} ({item['model']}): {item['reason']}")
    if not doc["stopped"] and not doc["skipped"]:
        print("nothing was running")
    return EXIT_OK


# -- reload ------------------------------------------------------------------------------------


def run_reload(args: argparse.Namespace, client: ControlClient) -> int:
    response = client.request("POST", "/api/reload")
    if response.status_code not in (200, 422):
        return unexpected(args, response)
    doc = response.json()
    ok = doc.get("result") in ("ok", "unchanged")
    if args.output == "json":
        emit_json(doc)
        return EXIT_OK if ok else EXIT_FAILED
    if doc.get("result") == "ok":
        print(f"reloaded: now serving revision {doc['revision']}")
    elif doc.get("result") == "unchanged":
        print(f"unchanged: revision {doc['revision']}")
    else:
        for issue in doc.get("errors", []):
            print(f"error: {issue_text(issue)}", file=sys.stderr)
        print("reload rejected: the previous profiles keep serving", file=sys.stderr)
    return EXIT_OK if ok else EXIT_FAILED


# -- restart -----------------------------------------------------------------------------------


def run_restart(args: argparse.Namespace, client: ControlClient) -> int:
    before = client.request("GET", "/api/status")
    if before.status_code != 200:
        return unexpected(args, before)
    started = before.json().get("process", {}).get("started_at")
    asked = time.monotonic()
    response = client.request("POST", "/api/restart")
    if response.status_code in (409, 422):
        fail(args, error_message(response), EXIT_FAILED)
        return EXIT_FAILED
    if response.status_code != 202:
        return unexpected(args, response)
    if args.no_wait:
        if args.output == "json":
            emit_json(response.json())
        else:
            print("restart accepted: the sidecars are being handed over")
        return EXIT_OK
    # the front keeps its socket across the restart: this waits in the listen queue until
    # the new program answers; a status from a later start is the new program's
    deadline = asked + args.timeout
    doc: Mapping[str, Any] | None = None
    while time.monotonic() < deadline:
        status = client.request("GET", "/api/status")
        if status.status_code == 200:
            candidate = status.json()
            if candidate.get("process", {}).get("started_at") != started:
                doc = candidate
                break
        sleep(0.05)
    if doc is None:
        fail(args, f"no restarted llamasup answered within {args.timeout:g}s", EXIT_FAILED)
        return EXIT_FAILED
    seconds = time.monotonic() - asked
    if args.output == "json":
        emit_json({"seconds": round(seconds, 3), "process": doc["process"]})
        return EXIT_OK
    print("\n".join(restart_lines(doc["process"], seconds)))
    return EXIT_OK


def restart_lines(process: Mapping[str, Any], seconds: float) -> list[str]:
    report = process.get("last_restart") or {}
    outcomes = report.get("sidecars", [])
    adopted = sum(1 for item in outcomes if item["result"] == "adopted")
    lines = [
        f"restarted in {seconds:.2f}s: pid {process['pid']}, restart {process['restarts']}; "
        f"{adopted} of {len(outcomes)} sidecars adopted (still running, not reloaded)"
    ]
    lines += [
        f"  {item['model']} ({item['key']}) pid {item['pid']}: {item['result']}"
        + ("" if item["result"] == "adopted" else f" ({item['reason']})")
        for item in outcomes
    ]
    return lines
