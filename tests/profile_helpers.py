"""Helpers for tests that write profile files."""

from __future__ import annotations

import textwrap
from pathlib import Path

from llamasup.errors import ProfileError, ProfileIssue
from llamasup.profiles.load import load_profiles
from llamasup.profiles.types import Profiles


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(path: Path, environ: dict[str, str] | None = None) -> Profiles:
    return load_profiles(path, environ or {})


def issues(path: Path, environ: dict[str, str] | None = None) -> list[ProfileIssue]:
    try:
        load_profiles(path, environ or {})
    except ProfileError as exc:
        return list(exc.issues)
    raise AssertionError(f"{path} loaded without errors")


def find(found: list[ProfileIssue], needle: str) -> ProfileIssue:
    for issue in found:
        if needle in issue.message or needle in issue.path:
            return issue
    listing = "\n".join(str(i) for i in found)
    raise AssertionError(f"no issue mentioning {needle!r} in:\n{listing}")
