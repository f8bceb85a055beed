"""Writing an applied profile set to disk: all of it, or nothing.

Every file is first written to a synced temporary file beside its target; each existing
target is hard-linked to a hidden backup. A journal naming every target, backup and staged
file is then written (``.llamasup-apply.journal`` in the profile directory) before the first
target is replaced (``os.replace``, atomic per file) and files the set no longer has are
renamed to backups rather than deleted. If any step fails, the changes are undone in reverse,
so a full disk or a permission problem halfway through leaves the profile path as it was; on
success the journal and the backups are removed. If llamasup itself dies halfway (SIGKILL,
power loss), the journal is still there and ``recover`` (run by ``serve`` before it loads
the profiles) rolls the interrupted apply back.

A target that is a symbolic link (a profile kept in a dotfiles repository, a ``..data`` style
layout) is written through: its link stays, the file it points to is replaced.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llamasup.errors import LlamasupError

logger = logging.getLogger(__name__)


class PersistError(LlamasupError):
    """A valid apply that could not be written to the profile path (nothing was adopted)."""


JOURNAL_NAME = ".llamasup-apply.journal"


def write_set(
    writes: Sequence[tuple[Path, str]],
    stale: Sequence[Path] = (),
    *,
    journal_dir: Path | None = None,
) -> None:
    """Write each ``(path, text)`` and remove each ``stale`` path, or change nothing.

    ``journal_dir`` (the profile directory) holds the crash journal; without one, a crash
    halfway is not recoverable (tests and callers that do not need it)."""
    journal = _Journal(journal_dir / JOURNAL_NAME if journal_dir is not None else None)
    try:
        targets = _targets(writes, stale)
        for real, text in targets:
            journal.stage(real, text)
        written = [real for real, _ in targets]
        for path in stale:
            if not _same_entry_as_written(path, written):
                journal.plan_removal(path)
        journal.commit()
    except OSError as exc:
        kept = journal.undo()
        outcome = "; nothing was changed"
        if kept:
            where = ", ".join(f"{path} (its old text is in {backup})" for path, backup in kept)
            outcome = f"; could not put back {where}"
        raise PersistError(f"cannot write the profile set: {_why(exc)}{outcome}") from exc
    finally:
        journal.discard()


def recover(journal_dir: Path) -> str | None:
    """Roll back an apply that a crash interrupted; what was done, or None if nothing was."""
    path = journal_dir / JOURNAL_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        installs = [_Install(Path(r), _opt(b), Path(t)) for r, b, t in data["installs"]]
        removals = [(Path(p), Path(b)) for p, b in data["removals"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise PersistError(f"{path}: unreadable apply journal ({exc}); remove it") from exc
    try:
        _roll_back(installs, removals)
        path.unlink()
        _fsync_directory(journal_dir)
    except OSError as exc:
        raise PersistError(
            f"cannot roll back the interrupted apply recorded in {path}: {_why(exc)}"
        ) from exc
    return (
        f"rolled back an apply interrupted by a crash ({len(installs)} file(s) restored, "
        f"{len(removals)} put back); the profiles are as they were before it"
    )


def _roll_back(installs: Sequence[_Install], removals: Sequence[tuple[Path, Path]]) -> None:
    for removed, backup in reversed(removals):
        if os.path.lexists(removed):  # never moved: the backup is an empty placeholder
            backup.unlink(missing_ok=True)
        elif os.path.lexists(backup):
            os.replace(backup, removed)
    for install in reversed(installs):
        if install.backup is not None:
            if install.backup.exists():
                os.replace(install.backup, install.real)
                install.backup.unlink(missing_ok=True)  # a no-op rename left both names
        elif not install.temp.exists():  # a new file that was put in place
            install.real.unlink(missing_ok=True)
        install.temp.unlink(missing_ok=True)
    for directory in {i.real.parent for i in installs} | {p.parent for p, _ in removals}:
        _fsync_directory(directory)


def _opt(value: str | None) -> Path | None:
    return None if value is None else Path(value)


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


@dataclass
class _Install:
    real: Path
    #: a hard link to the file it replaces (None: a new file)
    backup: Path | None
    temp: Path


class _Journal:
    """One ``write_set``: the staged files, what has been changed, and how to take it back."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._written = False
        self._scratch: list[Path] = []
        self._installs: list[_Install] = []
        self._removals: list[tuple[Path, Path]] = []
        #: (path, its backup or None when the path did not exist before), in the order done
        self._done: list[tuple[Path, Path | None]] = []
        self._directories: set[Path] = set()

    def stage(self, real: Path, text: str) -> None:
        """``text`` in a synced temp file beside ``real``, and a backup of ``real``."""
        temp = self._new(real, ".tmp")
        with temp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # keep the replaced file's permissions (mkstemp makes 0600); a new file gets 0644
        mode = stat.S_IMODE(real.stat().st_mode) if real.exists() else 0o644
        os.chmod(temp, mode)
        backup: Path | None = None
        if real.exists():
            backup = self._new(real, ".bak")
            backup.unlink()
            try:
                os.link(real, backup)
            except OSError:  # a file system without hard links
                shutil.copy2(real, backup)
        self._installs.append(_Install(real, backup, temp))

    def plan_removal(self, path: Path) -> None:
        self._removals.append((path, self._new(path, ".bak")))

    def commit(self) -> None:
        """Record the journal, then make every change; ``undo`` takes back those made."""
        self._write_journal()
        for install in self._installs:
            os.replace(install.temp, install.real)
            self._done.append((install.real, install.backup))
            self._directories.add(install.real.parent)
        for path, backup in self._removals:
            os.replace(path, backup)
            self._done.append((path, backup))
            self._directories.add(path.parent)
        for directory in sorted(self._directories):
            _fsync_directory(directory)
        self._remove_journal()

    def _write_journal(self) -> None:
        if self._path is None:
            return
        record = {
            "installs": [
                [str(i.real), None if i.backup is None else str(i.backup), str(i.temp)]
                for i in self._installs
            ],
            "removals": [[str(path), str(backup)] for path, backup in self._removals],
        }
        temp = self._new(self._path, ".tmp")
        temp.write_text(json.dumps(record), encoding="utf-8")
        with temp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, self._path)
        self._written = True
        _fsync_directory(self._path.parent)

    def _remove_journal(self) -> None:
        if self._path is not None and self._written:
            self._path.unlink(missing_ok=True)
            self._written = False
            _fsync_directory(self._path.parent)

    def _new(self, beside: Path, suffix: str) -> Path:
        """A scratch file (staged text or a backup), removed by ``discard`` unless renamed."""
        path = _temp_beside(beside, suffix)
        self._scratch.append(path)
        return path

    def undo(self) -> list[tuple[Path, Path]]:
        """Put every changed path back; those that could not be, with the backup holding
        their old text (kept on disk for the operator, and the journal with them)."""
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
        if not kept:
            with contextlib.suppress(OSError):
                self._remove_journal()
        return kept

    def discard(self) -> None:
        for path in self._scratch:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


def name_max(directory: Path) -> int:
    """The longest file name (in bytes) ``directory``'s file system takes (255 on Linux)."""
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):  # no such directory yet, or no pathconf (Windows)
        return _NAME_MAX


#: NAME_MAX of POSIX file systems, when the file system cannot be asked
_NAME_MAX = 255
#: what mkstemp adds to a scratch name besides the suffix: two dots and eight random letters
_SCRATCH_EXTRA = 10


def _temp_beside(path: Path, suffix: str) -> Path:
    """A new file name in ``path``'s directory, hidden (dot) so no profile loader reads it.

    It starts with ``path``'s name, cut so that the whole name still fits the file system
    (a profile file named at the longest allowed length gets scratch files too)."""
    room = name_max(path.parent) - _SCRATCH_EXTRA - len(suffix.encode())
    stem = path.name.encode()[:room].decode("utf-8", "ignore")
    fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=suffix, dir=path.parent)
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
