"""Writing an applied profile set to disk: all of it, or nothing.

Every apply first records a journal (``.llamasup-apply.journal`` in the profile directory)
naming every target and every scratch file it will use: a synced temporary file beside each
target, and a hidden hard-linked backup of each existing target and of each file the set no
longer has. The journal's ``phase`` says what the scratch files are for:

* ``staging``: the scratch files are being made; nothing visible has changed.
* ``committing``: targets are being replaced (``os.replace``, atomic per file) and dropped
  files renamed to their backups; the backups are how to take it back.
* ``committed``: every change is made; the scratch files are no longer needed.

If any step fails, the changes are undone in reverse, so a full disk or a permission problem
halfway through leaves the profile path as it was. On success, and after an undo, the scratch
files are removed and the journal last. If llamasup itself dies halfway (SIGKILL, power loss),
the journal is still there and ``recover`` (run by ``serve`` before it loads the profiles)
finishes the job its phase names: it rolls an interrupted commit back, and in every phase
removes the scratch files, so no hidden ``.tmp``/``.bak`` file outlives the apply.

A target that is a symbolic link (a profile kept in a dotfiles repository, a ``..data`` style
layout) is written through: its link stays, the file it points to is replaced.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llamasup.errors import LlamasupError

logger = logging.getLogger(__name__)


class PersistError(LlamasupError):
    """A valid apply that could not be written to the profile path (nothing was adopted)."""


JOURNAL_NAME = ".llamasup-apply.journal"
#: where a journal is written before it replaces the last one; never in force itself
JOURNAL_TEMP = JOURNAL_NAME + ".tmp"

Phase = Literal["staging", "committing", "committed"]

#: scratch files of an apply (this version's and older ones', whose names ``mkstemp`` drew),
#: found without a journal: left by a crash before the journal was written or after it was
#: removed, by a llamasup older than the phased journal
_ORPHAN = re.compile(r"\.(?P<target>.+\.ya?ml|\.llamasup-apply\.journal)\.[a-z0-9_]{8}\.(tmp|bak)")


def write_set(
    writes: Sequence[tuple[Path, str]],
    stale: Sequence[Path] = (),
    *,
    journal_dir: Path | None = None,
) -> None:
    """Write each ``(path, text)`` and remove each ``stale`` path, or change nothing.

    ``journal_dir`` (the profile directory) holds the crash journal; without one, a crash
    halfway is not recoverable (tests and callers that do not need it)."""
    targets = _targets(writes, stale)
    written = [real for real, _ in targets]
    removals = [path for path in stale if not _same_entry_as_written(path, written)]
    journal = _Journal(
        journal_dir / JOURNAL_NAME if journal_dir is not None else None, written, removals
    )
    kept: list[tuple[Path, Path]] = []
    try:
        journal.begin()
        for real, text in targets:
            journal.stage(real, text)
        journal.commit()
    except OSError as exc:
        kept = journal.undo()
        outcome = "; nothing was changed"
        if kept:
            where = ", ".join(f"{path} (its old text is in {backup})" for path, backup in kept)
            outcome = f"; could not put back {where}"
        raise PersistError(f"cannot write the profile set: {_why(exc)}{outcome}") from exc
    finally:
        journal.finish(kept=[backup for _, backup in kept])


def recover(journal_dir: Path, *, profile_file: str | None = None) -> str | None:
    """Finish an apply that a crash interrupted: roll back a commit cut short, and remove the
    scratch files (and the journal) in every phase. What was done, or None if nothing was.

    ``profile_file``: the one profile file served from ``journal_dir`` (not a directory of
    them); scratch files no journal names are then only looked for beside it."""
    path = journal_dir / JOURNAL_NAME
    try:
        temp = journal_dir / JOURNAL_TEMP
        if os.path.lexists(temp):  # its write was cut short (and a read-only directory,
            temp.unlink()  # a ConfigMap say, refuses even the unlink of a missing file)
        data = json.loads(path.read_text(encoding="utf-8"))
        phase: str = data.get("phase", "committing")  # older journals had no phases
        installs = [_Install(Path(r), _opt(b), Path(t)) for r, b, t in data["installs"]]
        removals = [(Path(p), Path(b)) for p, b in data["removals"]]
    except FileNotFoundError:
        return _remove_orphans(journal_dir, profile_file)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise PersistError(f"{path}: unreadable apply journal ({exc}); remove it") from exc
    if phase not in ("staging", "committing", "committed"):
        raise PersistError(f"{path}: unknown apply journal phase {phase!r}; remove it")
    try:
        if phase == "committing":
            _roll_back(installs, removals)
        scratch = [i.temp for i in installs] + [i.backup for i in installs if i.backup]
        for file in scratch + [backup for _, backup in removals]:
            file.unlink(missing_ok=True)
        path.unlink()
        for directory in {file.parent for file in scratch} | {journal_dir}:
            _fsync_directory(directory)
    except OSError as exc:
        raise PersistError(
            f"cannot finish the interrupted apply recorded in {path}: {_why(exc)}"
        ) from exc
    orphans = _remove_orphans(journal_dir, profile_file)
    if phase == "committing":
        done = (
            f"rolled back an apply interrupted by a crash ({len(installs)} file(s) restored, "
            f"{len(removals)} put back); the profiles are as they were before it"
        )
    elif phase == "staging":
        done = "removed the scratch files of an apply a crash cut short before it changed anything"
    else:
        done = "removed the scratch files of an apply a crash cut short after it was complete"
    return done if orphans is None else f"{done}; {orphans}"


def _remove_orphans(directory: Path, profile_file: str | None) -> str | None:
    """Remove scratch files no journal names (see ``_ORPHAN``), of ``profile_file`` only when
    given; what was done, or None."""
    try:
        names = [entry.name for entry in os.scandir(directory)]
    except OSError:
        return None
    removed = 0
    for name in names:
        orphan = _ORPHAN.fullmatch(name)
        if orphan is None:
            continue
        if profile_file is not None and orphan["target"] not in (profile_file, JOURNAL_NAME):
            continue
        with contextlib.suppress(OSError):
            (directory / name).unlink()
            removed += 1
            logger.info("removed %s, left by an interrupted apply", directory / name)
    if not removed:
        return None
    _fsync_directory(directory)
    return f"removed {removed} scratch file(s) left by interrupted applies"


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
    """One ``write_set``: its scratch files, what has been changed, and how to take it back.

    Every scratch name is chosen (one random token per apply) and recorded before the first
    scratch file exists, so a crash at any point leaves a journal that names them all."""

    def __init__(
        self, path: Path | None, targets: Sequence[Path], removals: Sequence[Path]
    ) -> None:
        self._path = path
        self._written = False
        token = _free_token([*targets, *removals])
        self._installs = [
            _Install(
                real,
                _scratch(real, token, ".bak") if os.path.lexists(real) else None,
                _scratch(real, token, ".tmp"),
            )
            for real in targets
        ]
        self._removals = [(path, _scratch(path, token, ".bak")) for path in removals]
        #: (path, its backup or None when the path did not exist before), in the order done
        self._done: list[tuple[Path, Path | None]] = []
        self._directories: set[Path] = set()

    @property
    def _scratch_files(self) -> list[Path]:
        installs = [(i.temp, i.backup) for i in self._installs]
        return [p for pair in installs for p in pair if p] + [b for _, b in self._removals]

    def begin(self) -> None:
        self._write_journal("staging")

    def stage(self, real: Path, text: str) -> None:
        """``text`` in a synced temp file beside ``real``, and a backup of ``real``."""
        install = next(i for i in self._installs if i.real == real)
        fd = os.open(install.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # keep the replaced file's permissions; a new file gets 0644
        mode = stat.S_IMODE(real.stat().st_mode) if install.backup is not None else 0o644
        os.chmod(install.temp, mode)
        if install.backup is not None:
            try:
                os.link(real, install.backup)
            except OSError as exc:
                if isinstance(exc, FileExistsError):  # not ours: never write over it
                    raise
                shutil.copy2(real, install.backup)  # a file system without hard links

    def commit(self) -> None:
        """Record the commit, then make every change; ``undo`` takes back those made."""
        self._write_journal("committing")
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
        self._write_journal("committed")

    def _write_journal(self, phase: Phase) -> None:
        if self._path is None:
            return
        record = {
            "phase": phase,
            "installs": [
                [str(i.real), None if i.backup is None else str(i.backup), str(i.temp)]
                for i in self._installs
            ],
            "removals": [[str(path), str(backup)] for path, backup in self._removals],
        }
        temp = self._path.with_name(JOURNAL_TEMP)
        with temp.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps(record))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self._path)
        self._written = True
        _fsync_directory(self._path.parent)

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
        self._done.clear()
        return kept

    def finish(self, *, kept: Sequence[Path] = ()) -> None:
        """Remove the scratch files, then the journal (last: until it is gone, a crash leaves
        it naming what is still to be removed). With ``kept`` backups, both stay."""
        for path in self._scratch_files:
            if path not in kept:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        if self._path is None:
            return
        with contextlib.suppress(OSError):
            self._path.with_name(JOURNAL_TEMP).unlink(missing_ok=True)
        if kept or not self._written:
            return
        with contextlib.suppress(OSError):
            self._path.unlink(missing_ok=True)
            self._written = False
            _fsync_directory(self._path.parent)


def name_max(directory: Path) -> int:
    """The longest file name (in bytes) ``directory``'s file system takes (255 on Linux)."""
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):  # no such directory yet, or no pathconf (Windows)
        return _NAME_MAX


#: NAME_MAX of POSIX file systems, when the file system cannot be asked
_NAME_MAX = 255


def _scratch(beside: Path, token: str, suffix: str) -> Path:
    """A hidden (dot) name in ``beside``'s directory, so no profile loader reads it; its copy
    of ``beside``'s name is cut so that the whole name still fits the file system (a profile
    file named at the longest allowed length gets scratch files too)."""
    room = name_max(beside.parent) - len(f"..{token}{suffix}".encode())
    stem = beside.name.encode()[:room].decode("utf-8", "ignore")
    return beside.with_name(f".{stem}.{token}{suffix}")


def _free_token(paths: Sequence[Path]) -> str:
    """A token no scratch name of ``paths`` uses yet (``_ORPHAN`` knows its shape)."""
    while True:
        token = secrets.token_hex(4)
        names = [_scratch(p, token, suffix) for p in paths for suffix in (".tmp", ".bak")]
        if not any(os.path.lexists(name) for name in names):
            return token


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
