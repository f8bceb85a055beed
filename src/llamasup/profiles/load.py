"""Profiles: the frozen, validated form of ``profiles.yaml`` (one file or a directory of them).

Loading reports every problem it finds (file, line, key path, what is allowed) in one
``ProfileError``; a profile that loads is internally consistent: flags parse, references
resolve, ids are unique across files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llamasup.core.envsubst import substitute
from llamasup.core.yamlsrc import KeyPath, YamlSyntaxError, load_yaml
from llamasup.errors import ProfileError, ProfileIssue
from llamasup.profiles.build import build_profiles
from llamasup.profiles.discover import profile_files
from llamasup.profiles.parsed import IssueLog, ParsedFile
from llamasup.profiles.schema import schema_issues
from llamasup.profiles.types import (
    Profiles,
)

#: a profile set as read: (file name, text, directory its relative paths resolve against)
ProfileTexts = tuple[tuple[str, str, Path], ...]


def load_profiles(path: Path | str, environ: Mapping[str, str] | None = None) -> Profiles:
    """Load and validate a profile file or directory; raise ``ProfileError`` listing all issues."""
    root = Path(path).expanduser()
    env = os.environ if environ is None else environ
    return load_texts(read_texts(root), source=str(root), environ=env)


def read_texts(path: Path | str) -> ProfileTexts:
    """The text of every file of a profile path, as ``load_texts`` takes it; raises
    ``ProfileError`` when the path is missing, holds no profile or a file cannot be read.

    A watcher reads this until it stops changing, then loads exactly what it read."""
    root = Path(path).expanduser()
    if not root.exists():
        raise ProfileError([ProfileIssue(str(root), None, "", "no such file or directory")])
    files = profile_files(root)
    if not files:
        raise ProfileError(
            [ProfileIssue(str(root), None, "", "directory holds no *.yaml or *.yml profile")]
        )
    texts: list[tuple[str, str, Path]] = []
    for file in files:
        try:
            texts.append((str(file), file.read_text("utf-8"), file.parent.resolve()))
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError([ProfileIssue(str(file), None, "", f"cannot read: {exc}")]) from exc
    return tuple(texts)


def load_texts(
    texts: Sequence[tuple[str, str, Path]],
    *,
    source: str,
    environ: Mapping[str, str],
) -> Profiles:
    """Load profiles from (name, text, directory) triples; directory anchors relative paths."""
    log = IssueLog()
    parsed = [p for p in (_parse_file(name, text, d, environ, log) for name, text, d in texts) if p]
    revision = _revision(texts)
    profiles = build_profiles(parsed, log, environ=environ, source=source, revision=revision)
    if log.errors or profiles is None:
        order = {name: i for i, (name, _, _) in enumerate(texts)}
        raise ProfileError(
            sorted(
                _without_follow_ons(log.errors),
                key=lambda issue: (order.get(issue.file, 0), issue.line or 0),
            ),
            warnings=log.warnings,
        )
    return profiles


def _without_follow_ons(found: Sequence[ProfileIssue]) -> list[ProfileIssue]:
    """Drop what an unset ``${env.X}`` caused downstream (the value's type, the model's
    missing source): the unset variable is the one thing to fix there."""
    unset = {
        (issue.file, issue.path)
        for issue in found
        if issue.message.startswith("environment variable ") and "is not set" in issue.message
    }
    if not unset:
        return list(found)

    def follow_on(issue: ProfileIssue) -> bool:
        if (issue.file, issue.path) in unset and "is not set" not in issue.message:
            return True
        return any(
            file == issue.file and issue.path and path.startswith(issue.path + ".")
            for file, path in unset
        )

    return [issue for issue in found if not follow_on(issue)]


def _revision(texts: Sequence[tuple[str, str, Path]]) -> str:
    digest = hashlib.sha256()
    for name, text, _ in texts:
        digest.update(Path(name).name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:12]


def _parse_file(
    name: str, text: str, directory: Path, environ: Mapping[str, str], log: IssueLog
) -> ParsedFile | None:
    if not text.lstrip("\ufeff \t\r\n"):
        # never a profile anyone meant; most likely a write caught between truncate and write,
        # which adopted would stop every sidecar
        log.errors.append(ProfileIssue(name, None, "", "the file is empty"))
        return None
    try:
        doc = load_yaml(text)
    except YamlSyntaxError as exc:
        log.errors.append(ProfileIssue(name, exc.line, "", str(exc)))
        return None
    parsed = ParsedFile(name, directory, doc, {})
    for path, first, second in doc.duplicates:
        log.error(parsed, path, f"duplicate key (first defined on line {first}, again on {second})")
    if doc.data is None:
        return parsed
    data = substitute(doc.data, environ, lambda path, msg: log.error(parsed, path, msg))
    if not isinstance(data, dict):
        log.error(parsed, (), "a profile file is a mapping with server, models, agents, groups")
        return None
    found = list(schema_issues(data))
    for path, message in found:
        log.error(parsed, path, message)
    invalid = [path for path, _ in found]
    # Drop what is invalid (already reported) so the remaining checks can still run; removing a
    # key may leave its parent incomplete, so repeat until the rest satisfies the schema.
    for _ in range(_PRUNE_ROUNDS):
        if not invalid:
            break
        if () in invalid:
            return None
        for path in sorted(invalid, key=_deepest_last_first, reverse=True):
            _prune(data, path)
        invalid = [path for path, _ in schema_issues(data)]
    if invalid:
        return None
    parsed.data = data
    return parsed


_PRUNE_ROUNDS = 4


def _deepest_last_first(path: KeyPath) -> list[str]:
    return [str(part).zfill(8) for part in path]


def _prune(data: Any, path: KeyPath) -> None:
    """Drop an invalid subtree (already reported) so the other checks can still run."""
    parent = data
    for part in path[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(parent, dict):
        parent.pop(path[-1], None)
    elif isinstance(parent, list) and isinstance(path[-1], int) and path[-1] < len(parent):
        del parent[path[-1]]
