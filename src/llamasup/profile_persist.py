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
import tempfile
from collections.abc import Sequence
from pathlib import Path

from llamasup.errors import LlamasupError

logger = logging.getLogger(__name__)


class PersistError(LlamasupError):
    """A valid apply that could not be written to the profile path (nothing was adopted)."""


def write_set(writes: Sequence[tuple[Path, str]], stale: Sequence[Path] = ()) -> None:
    """Write each ``(path, text)`` and remove each ``stale`` path, or change nothing."""
    targets = [(_real_target(path), text) for path, text in writes]
    journal = _Journal()
    try:
        staged = [(journal.stage(real, text), real) for real, text in targets]
        for temp, real in staged:
            journal.install(temp, real)
        for path in stale:
            journal.remove(path)
        journal.sync()
    except OSError as exc:
        failed = journal.undo()
        outcome = (
            f"; restoring {failed} also failed, check the profile files"
            if failed
            else "; nothing was changed"
        )
        raise PersistError(f"cannot write the profile set: {_why(exc)}{outcome}") from exc
    finally:
        journal.discard()


def _real_target(path: Path) -> Path:
    real = path.resolve() if path.is_symlink() else path
    if real.exists() and not real.is_file():
        shown = str(path) if real == path else f"{path} (a link to {real})"
        raise PersistError(f"cannot write {shown}: it exists and is not a regular file")
    return real


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
        self._done.append((real, backup))
        os.replace(temp, real)
        self._directories.add(real.parent)

    def remove(self, path: Path) -> None:
        backup = self._new(path, ".bak")
        os.replace(path, backup)
        self._done.append((path, backup))
        self._directories.add(path.parent)

    def sync(self) -> None:
        for directory in sorted(self._directories):
            _fsync_directory(directory)

    def undo(self) -> str | None:
        """Put every changed path back; the first one that could not be, if any."""
        failed: str | None = None
        for path, backup in reversed(self._done):
            try:
                if backup is None:
                    path.unlink(missing_ok=True)
                else:
                    os.replace(backup, path)
            except OSError as exc:
                logger.error("restoring %s after a failed apply: %s", path, exc)
                failed = failed or str(path)
        self._done.clear()
        return failed

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
