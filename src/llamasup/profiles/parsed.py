"""Profile files as the builder collects them, and the issues found in them, each located by
file, line and key path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamasup.core.yamlsrc import KeyPath, YamlDoc, format_path
from llamasup.errors import ProfileIssue


@dataclass
class ParsedFile:
    """One profile file after YAML, substitution and schema checks."""

    name: str
    directory: Path
    doc: YamlDoc
    data: dict[str, Any]


class IssueLog:
    """Collects issues; every one is located by file, line and key path."""

    def __init__(self) -> None:
        self.errors: list[ProfileIssue] = []
        self.warnings: list[ProfileIssue] = []

    def error(self, parsed: ParsedFile | str, path: KeyPath, message: str) -> None:
        self.errors.append(_issue(parsed, path, message))

    def warn(self, parsed: ParsedFile | str, path: KeyPath, message: str) -> None:
        self.warnings.append(_issue(parsed, path, message))


def _issue(parsed: ParsedFile | str, path: KeyPath, message: str) -> ProfileIssue:
    if isinstance(parsed, str):
        return ProfileIssue(parsed, None, format_path(path), message)
    return ProfileIssue(parsed.name, parsed.doc.line_of(path), format_path(path), message)


#: model keys whose place ``Profiles.sources`` records (checks on the host point at them)


@dataclass(frozen=True)
class At:
    """Where a value was defined: its file and key path."""

    file: ParsedFile
    path: KeyPath


def where(at: At) -> str:
    line = at.file.doc.line_of(at.path)
    return at.file.name if line is None else f"{at.file.name}:{line}"


def error_at(log: IssueLog, at: At, message: str, *suffix: str | int) -> None:
    log.error(at.file, (*at.path, *suffix), message)
