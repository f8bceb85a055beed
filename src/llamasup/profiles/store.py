"""The profile set llamasup serves: the last good one, how it got there, and how to change it.

A reload (file watch, SIGHUP) or an apply (control API) produces a candidate; an invalid
candidate changes nothing (its errors are kept for status) and the last good set keeps
serving. An apply is persisted atomically (temp file, fsync, rename) before it is adopted,
so a restart of ``serve`` comes back with what was applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llamasup.errors import LlamasupError, ProfileError, ProfileIssue
from llamasup.profiles.discover import PROFILE_SUFFIXES, profile_files
from llamasup.profiles.load import ProfileTexts, load_profiles, load_texts
from llamasup.profiles.persist import name_max, write_set
from llamasup.profiles.types import Profiles

logger = logging.getLogger(__name__)

ReloadOutcome = Literal["ok", "unchanged", "error"]


class ApplyError(LlamasupError):
    """An apply request that cannot be carried out as asked (not a profile validation error)."""


class FileNameTooLongError(ApplyError):
    """A file name longer than the served directory's file system takes (``NAME_MAX``)."""


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
        on_unchanged: Callable[[Profiles], None] | None = None,
    ) -> None:
        self.path = path
        self.current = profiles
        self._on_change = on_change
        #: problems that make a valid profile set unacceptable to this running llamasup
        #: (a reload or apply with any is refused like an invalid one)
        self._vet = vet
        #: told a reload or apply that found the same revision (what it read besides the
        #: profile text, such as key files, may still have changed)
        self._on_unchanged = on_unchanged
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

    async def reload(self, trigger: str, texts: ProfileTexts | None = None) -> ReloadResult:
        """Read the profile path again and adopt it if it is valid and different.

        ``texts``: what a caller already read from the path (a watcher that waited for the
        files to settle), loaded as is instead of reading again."""
        async with self._lock:
            try:
                if texts is None:
                    candidate = await asyncio.to_thread(load_profiles, self.path, self._environ)
                else:
                    candidate = await asyncio.to_thread(self._load, texts)
                self._check(candidate)
            except ProfileError as exc:
                for issue in exc.issues:
                    logger.error("reload (%s) rejected: %s", trigger, issue)
                logger.error("keeping profile revision %s", self.current.revision)
                return self._record(trigger, "error", None, exc.issues)
            return self._adopt(candidate, trigger)

    def _load(self, texts: ProfileTexts) -> Profiles:
        return load_texts(texts, source=str(self.path.expanduser()), environ=self._environ)

    def _adopt(self, candidate: Profiles, trigger: str) -> ReloadResult:
        if candidate.revision == self.current.revision:
            if self._on_unchanged is not None:
                self._on_unchanged(self.current)
            if trigger == "watch" and self.last_reload.result != "error":
                # the watcher seeing what an apply just wrote, or a save that changed nothing:
                # not news, and it must not hide the last real change from status
                return ReloadResult(self._clock(), trigger, "unchanged", candidate.revision)
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
            writing = asyncio.ensure_future(asyncio.to_thread(self._persist, files))
            try:
                await asyncio.shield(writing)
            except asyncio.CancelledError:
                # the thread goes on writing: hold the lock until it is done, or a reload
                # could read a half-written set
                with contextlib.suppress(Exception):
                    await writing
                raise
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
            if self.is_directory:
                self._check_writable_name(name)
            pairs.append((name, base))
        if not self.is_directory:
            if len(pairs) != 1:
                raise ApplyError(
                    f"{self.path} is a single profile file; apply one file, or serve a directory"
                )
            return [(pairs[0][0], self.path.name)]
        return pairs

    def _check_writable_name(self, name: str) -> None:
        """A name the served directory's file system can hold (checked before validation,
        so a dry run refuses what the apply could not write)."""
        try:
            size = len(os.fsencode(name))
        except UnicodeEncodeError as exc:
            raise ApplyError(f"file name {name!r} cannot be a file name here: {exc}") from exc
        longest = name_max(self.path)
        if size > longest:
            raise FileNameTooLongError(
                f"file name {name[:40]!r}... is {size} bytes; a file name may be at most "
                f"{longest} bytes (NAME_MAX of the file system of {self.path})"
            )

    def _persist(self, files: Mapping[str, str]) -> None:
        """Write the set to the profile path, all or nothing (see ``profile_persist``)."""
        targets = self._target_names(files)
        directory = self.path if self.is_directory else self.path.parent
        writes = [(directory / target, files[name]) for name, target in targets]
        stale: list[Path] = []
        if self.is_directory:
            keep = {target for _, target in targets}
            stale = [path for path in profile_files(self.path) if path.name not in keep]
        write_set(writes, stale, journal_dir=directory)
