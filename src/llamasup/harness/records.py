"""The result log: JSON lines, one per finished unit of work (a bench cell, an eval answer),
each under a key that says exactly what was measured, so a run resumes unit by unit.

A line is written with one ``write`` and fsync'd before the next unit starts: a run killed at
any instant loses at most the unit in flight, never a finished one. A line cut short by the
kill is dropped (and cut off the file) when the log is opened again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from llamasup.errors import LlamasupError

Record = dict[str, Any]


class ResultLogError(LlamasupError):
    """The result file cannot be used as asked (exists without ``--resume``, unreadable)."""


def record_key(parts: Mapping[str, Any]) -> str:
    """A stable hash of what a unit measured (canonical JSON; 20 hex digits)."""
    encoded = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()[:20]


class ResultLog:
    """Append-only JSON lines; ``done(key)`` says whether a unit is already in the file.

    Args:
        path: the file (created if missing).
        resume: keep what the file holds and skip those units; without it an existing,
            non-empty file is refused rather than mixed with a new run.
    """

    def __init__(self, path: Path, *, resume: bool) -> None:
        self.path = path
        self.records: list[Record] = []
        if path.exists() and path.stat().st_size > 0:
            if not resume:
                raise ResultLogError(
                    f"{path} already holds results: pass --resume to continue that run, "
                    "or name another file with -o"
                )
            self.records = list(_read(path))
        self._keys = {r["key"] for r in self.records if isinstance(r.get("key"), str)}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def done(self, key: str) -> bool:
        return key in self._keys

    def of_kind(self, kind: str) -> Iterator[Record]:
        return (r for r in self.records if r.get("kind") == kind)

    def append(self, record: Record) -> None:
        """Write one finished unit (it must carry ``key`` and ``kind``) durably."""
        line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self.records.append(record)
        key = record.get("key")
        if isinstance(key, str):
            self._keys.add(key)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ResultLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read(path: Path) -> Iterator[Record]:
    """The file's records; a torn last line (a run killed mid-write) is cut off the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ResultLogError(f"{path}: {exc}") from exc
    whole = data.rfind(b"\n") + 1
    if whole < len(data):
        with path.open("r+b") as handle:
            handle.truncate(whole)
    for number, raw in enumerate(data[:whole].splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError as exc:
            raise ResultLogError(f"{path}:{number}: not a JSON line ({exc})") from exc
        if not isinstance(record, dict):
            raise ResultLogError(f"{path}:{number}: not a JSON object")
        yield record
