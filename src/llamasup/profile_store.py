"""The profile set llamasup serves: the last good one, how it got there, and how to change it.

A reload (file watch, SIGHUP) or an apply (control API) produces a candidate; an invalid
candidate changes nothing (its errors are kept for status) and the last good set keeps
serving. An apply is persisted atomically (temp file, fsync, rename) before it is adopted,
so a restart of ``serve`` comes back with what was applied.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llamasup.errors import LlamasupError, ProfileError, ProfileIssue
from llamasup.profiles import PROFILE_SUFFIXES, Profiles, load_profiles, load_texts, profile_files

logger = logging.getLogger(__name__)

ReloadOutcome = Literal["ok", "unchanged", "error"]


class ApplyError(LlamasupError):
    """An apply request that cannot be carried out as asked (not a profile validation error)."""


class PersistError(LlamasupError):
    """A valid apply that could not be written to the profile path (nothing was adopted)."""


@dataclass(frozen=True)
class ReloadResult:
    at: float
    trigger: str
    result: ReloadOutcome
    revision: str | None
    errors: tuple[ProfileIssue, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "trigger": self.trigger,
            "result": self.result,
            "revision": self.revision,
            "errors": [issue.as_dict() for issue in self.errors],
        }


class ProfileStore:
    def __init__(
        self,
        path: Path,
        profiles: Profiles,
        on_change: Callable[[Profiles], None],
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        vet: Callable[[Profiles], Sequence[ProfileIssue]] | None = None,
    ) -> None:
        self.path = path
        self.current = profiles
        self._on_change = on_change
        #: problems that make a valid profile set unacceptable to this running llamasup
        #: (a reload or apply with any is refused like an invalid one)
        self._vet = vet
        self._environ = os.environ if environ is None else environ
        self._clock = clock
        self.loaded_at = clock()
        self.last_reload = ReloadResult(self.loaded_at, "startup", "ok", profiles.revision)
        self._lock = asyncio.Lock()
        #: told every reload and apply result (metrics)
        self.listeners: list[Callable[[ReloadResult], None]] = []

    @property
    def is_directory(self) -> bool:
        return self.path.is_dir()

    async def reload(self, trigger: str) -> ReloadResult:
        """Read the profile path again and adopt it if it is valid and different."""
        async with self._lock:
            try:
                candidate = await asyncio.to_thread(load_profiles, self.path, self._environ)
                self._check(candidate)
            except ProfileError as exc:
                for issue in exc.issues:
                    logger.error("reload (%s) rejected: %s", trigger, issue)
                logger.error("keeping profile revision %s", self.current.revision)
                return self._record(trigger, "error", None, exc.issues)
            return self._adopt(candidate, trigger)

    def _adopt(self, candidate: Profiles, trigger: str) -> ReloadResult:
        if candidate.revision == self.current.revision:
            return self._record(trigger, "unchanged", candidate.revision)
        logger.info("profiles %s -> %s (%s)", self.current.revision, candidate.revision, trigger)
        self.current = candidate
        self.loaded_at = self._clock()
        self._on_change(candidate)
        return self._record(trigger, "ok", candidate.revision)

    def _record(
        self,
        trigger: str,
        result: ReloadOutcome,
        revision: str | None,
        errors: tuple[ProfileIssue, ...] = (),
    ) -> ReloadResult:
        self.last_reload = ReloadResult(self._clock(), trigger, result, revision, errors)
        for listener in self.listeners:
            listener(self.last_reload)
        return self.last_reload

    # -- apply -----------------------------------------------------------------------------

    def candidate(self, files: Mapping[str, str]) -> Profiles:
        """Validate a profile set given as {file name: text}; raises ProfileError."""
        names = self._target_names(files)
        directory = self.path if self.is_directory else self.path.parent
        texts = [
            (str(directory / target), files[name], directory.resolve()) for name, target in names
        ]
        candidate = load_texts(texts, source=str(self.path), environ=self._environ)
        self._check(candidate)
        return candidate

    def _check(self, candidate: Profiles) -> None:
        issues = tuple(self._vet(candidate)) if self._vet is not None else ()
        if issues:
            raise ProfileError(issues)

    async def apply(self, files: Mapping[str, str]) -> tuple[Profiles, ReloadResult]:
        """Validate, persist atomically, adopt. Raises ProfileError or ApplyError."""
        async with self._lock:
            candidate = self.candidate(files)
            await asyncio.to_thread(self._persist, files)
            return candidate, self._adopt(candidate, "apply")

    def _target_names(self, files: Mapping[str, str]) -> list[tuple[str, str]]:
        if not files:
            raise ApplyError("an apply needs at least one profile file")
        pairs: list[tuple[str, str]] = []
        for name in sorted(files):
            base = Path(name).name
            if base != name or base.startswith(".") or not base.endswith(PROFILE_SUFFIXES):
                raise ApplyError(
                    f"file name {name!r} must be a plain *.yaml or *.yml name (no directories)"
                )
            pairs.append((name, base))
        if not self.is_directory:
            if len(pairs) != 1:
                raise ApplyError(
                    f"{self.path} is a single profile file; apply one file, or serve a directory"
                )
            return [(pairs[0][0], self.path.name)]
        return pairs

    def _persist(self, files: Mapping[str, str]) -> None:
        """Write the set so that a failure leaves the profile path as it was, as far as the
        file system allows: every file is written to a temp file and synced first, then all
        are renamed into place, and only then are files the set no longer has removed."""
        targets = self._target_names(files)
        directory = self.path if self.is_directory else self.path.parent
        for _, target in targets:
            path = directory / target
            if path.is_symlink() or (path.exists() and not path.is_file()):
                raise PersistError(f"cannot write {path}: it exists and is not a regular file")
        staged: list[tuple[Path, Path]] = []
        try:
            try:
                for name, target in targets:
                    staged.append(
                        (_staged_copy(directory / target, files[name]), directory / target)
                    )
            except OSError as exc:
                raise PersistError(
                    f"cannot write the profile set to {directory}: {_why(exc)}"
                ) from exc
            try:
                for temp, path in staged:
                    os.replace(temp, path)
                if self.is_directory:
                    keep = {target for _, target in targets}
                    for stale in profile_files(self.path):
                        if stale.name not in keep:
                            stale.unlink()
                _fsync_directory(directory)
            except OSError as exc:
                raise PersistError(
                    f"the profile set was only partly written to {directory}: {_why(exc)}; "
                    "the running profiles are unchanged, fix the cause and apply again"
                ) from exc
        finally:
            for temp, _ in staged:
                temp.unlink(missing_ok=True)


def _staged_copy(path: Path, text: str) -> Path:
    """``text`` in a synced temp file beside ``path``."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return Path(temp)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) if exc.filename is None else f"{exc.filename}: {exc.strerror}"


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - not possible on Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
