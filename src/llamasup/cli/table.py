"""Plain text for the CLI: aligned tables with long cells cut short, plan actions and profile
issues as the control API returns them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

EMPTY = "-"


def cell(value: object, width: int | None = None) -> str:
    """A table cell: ``-`` for nothing, one line, at most ``width`` characters."""
    if value is None or value in ("", [], ()):
        return EMPTY
    parts = value if isinstance(value, (list, tuple)) else [value]
    text = " ".join(",".join(str(v) for v in parts).split())
    if width is not None and len(text) > width:
        return text[: max(width - 1, 0)] + "…"
    return text


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a left-aligned table; the last column is not padded (no trailing blanks)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    lines = []
    for row in (headers, *rows):
        padded = [value.ljust(widths[i]) for i, value in enumerate(row[:-1])]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return lines


def issue_text(issue: Mapping[str, Any]) -> str:
    """``file:line: key.path: message``, as ``llamasup validate`` prints a profile issue."""
    where = issue["file"] if issue.get("line") is None else f"{issue['file']}:{issue['line']}"
    key = f" {issue['path']}:" if issue.get("path") else ""
    return f"{where}:{key} {issue['message']}"


PLAN_HEADERS = ("ACTION", "KEY", "MODEL", "REASON", "DETAIL")


def plan_lines(actions: Sequence[Mapping[str, Any]]) -> list[str]:
    if not actions:
        return ["plan: nothing to do"]
    return table(PLAN_HEADERS, [_action_row(action) for action in actions])


def _action_row(action: Mapping[str, Any]) -> list[str]:
    detail = action.get("detail") or ""
    if action.get("in_flight"):
        detail = f"{detail} (draining {action['in_flight']} requests)".strip()
    return [
        action["action"],
        action["key"],
        cell(action.get("model")),
        cell(action.get("reason")),
        cell(detail),
    ]
