"""Writing an applied profile set to disk: all of it, or nothing.

Every file is first written to a synced temporary file beside its target. Only then are the
targets replaced (``os.replace``, atomic per file), each existing one hard-linked to a backup
first, and files the set no longer has are renamed to backups rather than deleted. If any step
fails, the journal is undone in reverse, so a full disk or a permission problem halfway through
leaves the profile path exactly as it was; on success the backups are removed.

A target that is a symbolic link (a profile kept in a dotfiles repository, a ``..data`` style
layout) is written through: its link stays, the file it points to is replaced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from llamasup.errors import LlamasupError

logger = logging.getLogger(__name__)


class PersistError(LlamasupError):
    """A valid apply that could not be written to the profile path (nothing was adopted)."""


def write_set(writes: Sequence[tuple[Path, str]], stale: Sequence[Path] = ()) -> None:
    """Write each ``(path, text)`` and remove each ``stale`` path, or change nothing."""
    targets = _targets(writes, stale)
    journal = _Journal()
    try:
        staged = [(journal.stage(real, text), real) for real, text in targets]
        for temp, real in staged:
            journal.install(temp, real)
        written = [real for _, real in staged]
        for path in stale:
            if not _same_entry_as_written(path, written):
                journal.remove(path)
        journal.sync()
    except OSError as exc:
        kept = journal.undo()
        outcome = "; nothing was changed"
        if kept:
            where = ", ".join(f"{path} (its old text is in {backup})" for path, backup in kept)
            outcome = f"; could not put back {where}"
        raise PersistError(f"cannot write the profile set: {_why(exc)}{outcome}") from exc
    finally:
        journal.discard()


def _targets(writes: Sequence[tuple[Path, str]], stale: Sequence[Path]) -> list[tuple[Path, str]]:
    """Each write's real file (a symbolic link is written through), checked before anything
    changes: no two writes may land in one file, and none may go through a link into a file
    the set drops (the applied text would be removed with it)."""
    targets: list[tuple[Path, str]] = []
    seen: dict[Path, Path] = {}
    dropped = {path.resolve(): path for path in stale if not path.is_symlink()}
    for path, text in writes:
        real = _real_target(path)
        if real in seen:
            raise PersistError(f"cannot write {path} and {seen[real]}: both are {real}")
        if real in dropped:
            raise PersistError(
                f"cannot write {path}: it is a link to {dropped[real]}, which this apply removes"
            )
        seen[real] = path
        targets.append((real, text))
    return targets


def _real_target(path: Path) -> Path:
    try:
        real = path.resolve()
    except (OSError, RuntimeError) as exc:  # a link loop: RuntimeError before Python 3.13
        raise PersistError(f"cannot write {path}: {exc}") from exc
    if real.exists() and not real.is_file():
        shown = f"{path} (a link to {real})" if path.is_symlink() else str(path)
        raise PersistError(f"cannot write {shown}: it exists and is not a regular file")
    return real


def _same_entry_as_written(path: Path, written: Sequence[Path]) -> bool:
    """A stale name that is one of the files just written under another spelling (a
    case-insensitive file system): removing it would remove the applied text."""
    if path.is_symlink():
        return False
    for real in written:
        try:
            if os.path.samefile(path, real):
                return True
        except OSError:
            continue
    return False


class _Journal:
    """What a ``write_set`` changed so far, and how to take it back."""

    def __init__(self) -> None:
        self._scratch: list[Path] = []
        #: (path, its backup or None when the path did not exist before), in the order done
        self._done: list[tuple[Path, Path | None]] = []
        self._directories: set[Path] = set()

    def stage(self, real: Path, text: str) -> Path:
        temp = self._new(real, ".tmp")
        with temp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # keep the replaced file's permissions (mkstemp makes 0600); a new file gets 0644
        mode = stat.S_IMODE(real.stat().st_mode) if real.exists() else 0o644
        os.chmod(temp, mode)
        return temp

    def _new(self, beside: Path, suffix: str) -> Path:
        """A scratch file (staged text or a backup), removed by ``discard`` unless renamed."""
        path = _temp_beside(beside, suffix)
        self._scratch.append(path)
        return path

    def install(self, temp: Path, real: Path) -> None:
        backup: Path | None = None
        if real.exists():
            backup = self._new(real, ".bak")
            backup.unlink()
            try:
                os.link(real, backup)
            except OSError:  # a file system without hard links
                shutil.copy2(real, backup)
        os.replace(temp, real)
        self._done.append((real, backup))
        self._directories.add(real.parent)

    def remove(self, path: Path) -> None:
        backup = self._new(path, ".bak")
        os.replace(path, backup)
        self._done.append((path, backup))
        self._directories.add(path.parent)

    def sync(self) -> None:
        for directory in sorted(self._directories):
            _fsync_directory(directory)

    def undo(self) -> list[tuple[Path, Path]]:
        """Put every changed path back; those that could not be, with the backup holding
        their old text (kept on disk for the operator)."""
        kept: list[tuple[Path, Path]] = []
        for path, backup in reversed(self._done):
            try:
                if backup is None:
                    path.unlink(missing_ok=True)
                else:
                    os.replace(backup, path)
            except OSError as exc:
                logger.error("restoring %s after a failed apply: %s", path, exc)
                if backup is not None:
                    kept.append((path, backup))
                    self._scratch.remove(backup)
        self._done.clear()
        return kept

    def discard(self) -> None:
        for path in self._scratch:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


def _temp_beside(path: Path, suffix: str) -> Path:
    """A new file name in ``path``'s directory, hidden (dot) so no profile loader reads it."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - not possible on Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _why(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return reason if exc.filename is None else f"{exc.filename}: {reason}"
