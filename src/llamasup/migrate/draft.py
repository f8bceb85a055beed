"""The draft of an imported profile set: what an importer decided, before it becomes YAML.

Importers (``migrate_swap``, ``migrate_sidecar``) fill a ``Draft``; ``migrate_emit`` turns it
into one profile file or a GitOps directory, with the notes written as comments next to the
entries they concern. Every note about lost or changed behaviour is also a ``MigrationWarning``
so the command line can list it (text or JSON) with the key path of the input it came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

Section = Literal["server", "models", "groups", "agents", "header"]

#: the id pattern of models, agents and groups in the profile schema
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$")
#: aliases may also contain "/" (clients send ids like "org/model")
ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+/-]*$")
ID_MAX, ALIAS_MAX = 128, 200
_ID_BAD_CHARS = re.compile(r"[^A-Za-z0-9._:+-]+")


class InputError(Exception):
    """The input cannot be imported at all; ``problems`` lists every reason (key path: text)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class MigrationWarning:
    """Behaviour that is lost or changed, located by the input key path it comes from."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


@dataclass
class Entry:
    """One named entry of a section (a model, group or agent) with its comment lines."""

    fields: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: written commented out: the importer could not express it (the warning says why)
    disabled: bool = False


@dataclass
class Draft:
    """A profile set under construction."""

    source: str
    header: list[str] = field(default_factory=list)
    server: dict[str, Any] = field(default_factory=dict)
    server_notes: dict[str, list[str]] = field(default_factory=dict)
    models: dict[str, Entry] = field(default_factory=dict)
    groups: dict[str, Entry] = field(default_factory=dict)
    agents: dict[str, Entry] = field(default_factory=dict)
    warnings: list[MigrationWarning] = field(default_factory=list)
    #: environment variables the user must set before serving (name → why)
    secrets: dict[str, str] = field(default_factory=dict)

    def warn(self, path: str, message: str, *, section: Section = "header", name: str = "") -> None:
        """Record a warning and write it as a comment at the entry it concerns."""
        self.warnings.append(MigrationWarning(path, message))
        self.note(f"{path}: {message}" if path else message, section=section, name=name)

    def note(self, text: str, *, section: Section = "header", name: str = "") -> None:
        """A comment only (no warning): an explanation of a mapping that loses nothing."""
        if section == "header":
            self.header.append(text)
        elif section == "server":
            self.server_notes.setdefault(name, []).append(text)
        else:
            table: dict[str, Entry] = getattr(self, section)
            table.setdefault(name, Entry()).notes.append(text)

    def set_server(self, key: str, value: Any, note: str = "") -> None:
        self.server[key] = value
        if note:
            self.server_notes.setdefault(key, []).append(note)


def sanitize_id(name: str, taken: set[str]) -> str:
    """A valid, unused profile id for ``name``: bad characters become "-", clashes get a suffix."""
    candidate = _ID_BAD_CHARS.sub("-", name.strip()).strip("-._:+") or "model"
    if not candidate[0].isalnum():
        candidate = f"m{candidate}"
    candidate = candidate[:ID_MAX]
    unique, n = candidate, 2
    while unique in taken:
        suffix = f"-{n}"
        unique = f"{candidate[: ID_MAX - len(suffix)]}{suffix}"
        n += 1
    return unique


def valid_id(name: str) -> bool:
    return len(name) <= ID_MAX and ID_RE.match(name) is not None


def valid_alias(name: str) -> bool:
    return len(name) <= ALIAS_MAX and ALIAS_RE.match(name) is not None


_UNITS = (("d", 86400), ("h", 3600), ("m", 60))


def duration(seconds: float) -> str | int:
    """Seconds as the shortest exact profile duration: 300 → "5m", 45 → "45s", 0 → 0."""
    if seconds == 0:
        return 0
    if seconds == int(seconds):
        whole = int(seconds)
        for unit, size in _UNITS:
            if whole % size == 0:
                return f"{whole // size}{unit}"
        return f"{whole}s"
    return f"{seconds}s"


def log_level(value: str) -> str | None:
    """debug/info/warn/error (Go daemons) → the profile's spelling; None if unknown."""
    lowered = value.strip().lower()
    mapped = {"warn": "warning", "warning": "warning"}.get(lowered, lowered)
    return mapped if mapped in ("debug", "info", "warning", "error") else None
