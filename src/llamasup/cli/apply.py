"""``llamasup apply -f PATH`` and ``llamasup diff -f PATH``: send a local profile set to a
running llamasup (``POST /api/apply``), which validates it, plans it and (unless a dry run)
persists and adopts it.

The server validates (it knows the environment the profiles expand against); its error
locations name its own copies of the files, and are mapped back to the local files by name.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llamasup.cli.client import (
    APPLY_TIMEOUT,
    ControlClient,
    emit_json,
    fail,
    unexpected,
)
from llamasup.cli.commands.connection import EXIT_ERROR, EXIT_FAILED, EXIT_OK
from llamasup.cli.table import issue_text, plan_lines
from llamasup.profiles.discover import profile_files

#: plan actions that change what runs (a wait or a refusal is about requests, not the profiles)
_CHANGING_ACTIONS = ("stop", "start")
_CHANGE_LABELS = (
    ("changed", "changed (sidecar replaced)"),
    ("updated", "updated (settings only)"),
    ("added", "added"),
    ("removed", "removed"),
)


def run_apply(args: argparse.Namespace, client: ControlClient) -> int:
    outcome = _send(args, client)
    if isinstance(outcome, int):
        return outcome
    return EXIT_OK


def run_diff(args: argparse.Namespace, client: ControlClient) -> int:
    outcome = _send(args, client)
    if isinstance(outcome, int):
        return outcome
    return EXIT_FAILED if would_change(outcome) else EXIT_OK


def would_change(doc: Mapping[str, Any]) -> bool:
    actions = doc.get("plan", {}).get("actions", [])
    return bool(doc.get("changed")) or any(a["action"] in _CHANGING_ACTIONS for a in actions)


def _send(args: argparse.Namespace, client: ControlClient) -> dict[str, Any] | int:
    """The server's answer (printed), or the exit code of a failure (reported)."""
    local = _local_files(args)
    if isinstance(local, int):
        return local
    try:
        files = {name: path.read_text("utf-8") for name, path in local.items()}
    except (OSError, UnicodeDecodeError) as exc:
        fail(args, f"cannot read {args.path}: {exc}", EXIT_ERROR)
        return EXIT_ERROR
    params = {"dry_run": "1"} if args.dry_run else None
    response = client.request(
        "POST", "/api/apply", params=params, json={"files": files}, timeout=APPLY_TIMEOUT
    )
    if response.status_code == 422:
        _report_invalid(args, response.json(), local)
        code: int = args.invalid_exit
        return code
    if response.status_code != 200:
        return unexpected(args, response)
    doc: dict[str, Any] = response.json()
    doc["warnings"] = [localise(issue, local) for issue in doc.get("warnings", [])]
    if args.output == "json":
        emit_json(doc)
    else:
        print("\n".join(apply_lines(doc)))
    return doc


def _local_files(args: argparse.Namespace) -> dict[str, Path] | int:
    path: Path = args.path
    if not path.exists():
        fail(args, f"{path}: no such file or directory", EXIT_ERROR)
        return EXIT_ERROR
    files = {file.name: file for file in profile_files(path)}
    if not files:
        fail(args, f"{path}: directory holds no *.yaml or *.yml profile", EXIT_ERROR)
        return EXIT_ERROR
    return files


def localise(issue: Mapping[str, Any], local: Mapping[str, Path]) -> dict[str, Any]:
    """``issue`` with its file named as the local file it came from.

    A server that serves a single file stores an apply under its own file name, so with one
    local file every issue that names another file is that one's.
    """
    name = Path(str(issue.get("file") or "")).name
    found = local.get(name)
    if found is None and len(local) == 1 and name.endswith((".yaml", ".yml")):
        found = next(iter(local.values()))
    return {**issue, "file": str(found)} if found is not None else dict(issue)


def _report_invalid(
    args: argparse.Namespace, body: Mapping[str, Any], local: Mapping[str, Path]
) -> None:
    errors = [localise(issue, local) for issue in body.get("errors", [])]
    if args.output == "json":
        emit_json(
            {
                "valid": False,
                "source": str(args.path),
                "errors": errors,
                "exit_code": args.invalid_exit,
            }
        )
        return
    for issue in errors:
        print(f"error: {issue_text(issue)}", file=sys.stderr)
    count = f"{len(errors)} error" + ("" if len(errors) == 1 else "s")
    print(f"{args.path}: invalid ({count}); nothing was changed", file=sys.stderr)


def apply_lines(doc: Mapping[str, Any]) -> list[str]:
    before, after = doc.get("previous_revision"), doc.get("revision")
    if doc.get("dry_run"):
        head = (
            f"dry run: revision {before} -> {after}; nothing was written"
            if doc.get("changed")
            else f"dry run: same as the served revision {before}"
        )
    elif doc.get("changed"):
        head = f"applied: revision {before} -> {after} (reload {doc.get('result')})"
    else:
        head = f"unchanged: revision {after} is already served"
    lines = [head]
    for issue in doc.get("warnings", []):
        lines.append(f"warning: {issue_text(issue)}")
    models = doc.get("models", {})
    for field, label in _CHANGE_LABELS:
        if models.get(field):
            lines.append(f"models {label}: {', '.join(models[field])}")
    if doc.get("restart_needed"):
        lines.append(
            f"restart needed: {', '.join(doc['restart_needed'])} "
            "(server settings that take effect when llamasup restarts)"
        )
    lines.append("")
    lines += plan_lines(doc.get("plan", {}).get("actions", []))
    return lines
