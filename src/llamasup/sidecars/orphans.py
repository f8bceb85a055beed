"""Sidecar processes that outlived the llamasup that started them, and reaping them.

``PR_SET_PDEATHSIG`` kills a sidecar's *direct* child when llamasup dies. A ``binary:`` that is
a wrapper script without ``exec``, or a ``command:`` like ``sh -c "server & wait"``, leaves the
real server as a grandchild: the kernel kills the wrapper and the server is reparented to init,
still listening on its port.

Every sidecar process therefore carries a marker in its environment, which every process it
starts inherits: ``LLAMASUP_SIDECAR=<scope>:<owner pid>:<owner start time>``. ``scope`` names
the state directory (one llamasup deployment); the owner is the llamasup process, identified
by pid *and* start time, so a reused pid is not mistaken for it. At start, llamasup reaps every
process of its own user whose marker names its scope and an owner that is gone: those can only
be sidecars (or their children) of a llamasup that died without stopping them. A process
without the marker, of another scope, or of a live owner is never touched.

A planned restart re-executes llamasup in place: same pid, same start time, so the marker of
every sidecar it keeps stays valid. The new program adopts first, then reaps, sparing what it
adopted (and their process groups and sessions); a sidecar that carries *its own* marker but
was not adopted (its hand-over record was lost) is a leftover of its previous image and is
killed too (``find_leftovers``).

Linux only (``/proc``); elsewhere reaping finds nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llamasup.sidecars.procfs import start_time, stat

logger = logging.getLogger(__name__)

MARKER = "LLAMASUP_SIDECAR"
_PROC = Path("/proc")


def scope_of(state_dir: Path) -> str:
    """A short, stable name for a state directory (the marker carries no path)."""
    return hashlib.sha256(str(state_dir.absolute()).encode()).hexdigest()[:12]


#: (pid, proc root) -> that process's start time: it never changes while the pid lives (an
#: ``execve`` in place keeps it), and every sidecar made asks (a /proc read per cold start)
_own_start: dict[tuple[int, Path], str] = {}


def marker_value(state_dir: Path, proc: Path = _PROC) -> str:
    """This llamasup's marker for sidecars of ``state_dir``."""
    pid = os.getpid()
    started = _own_start.get((pid, proc))
    if started is None:
        started = start_time(pid, proc)
        if started is not None:
            _own_start[(pid, proc)] = started
    return f"{scope_of(state_dir)}:{pid}:{started or '?'}"


@dataclass(frozen=True)
class Orphan:
    pid: int
    owner: int
    argv: str


def find_orphans(
    state_dir: Path, proc: Path = _PROC, *, keep: frozenset[int] = frozenset()
) -> list[Orphan]:
    """Processes of this user marked for ``state_dir`` whose llamasup is gone.

    ``keep``: pids of adopted sidecars; neither they nor anything in their process group or
    session is an orphan, whatever its marker says.
    """
    scope = scope_of(state_dir)
    found: list[Orphan] = []
    for pid, marker in _markers(proc):
        owner_scope, _, rest = marker.partition(":")
        owner_text, _, owner_start = rest.partition(":")
        if owner_scope != scope or not owner_text.isdigit() or _kept(pid, keep, proc):
            continue
        owner = int(owner_text)
        if owner_start != "?" and start_time(owner, proc) == owner_start:
            continue  # its llamasup is alive: one of its sidecars, not an orphan
        found.append(Orphan(pid, owner, _argv(pid, proc)))
    return found


def find_leftovers(state_dir: Path, keep: frozenset[int], proc: Path = _PROC) -> list[Orphan]:
    """Sidecar processes of *this* llamasup (its own marker: this pid and start time) that are
    not in ``keep`` (by pid, process group or session).

    A fresh llamasup has none: they exist only after it re-executed itself, and are then
    sidecars of the previous image that it did not adopt (its hand-over record was unreadable,
    say). Nobody else will ever stop them.
    """
    own = marker_value(state_dir, proc)
    return [
        Orphan(pid, os.getpid(), _argv(pid, proc))
        for pid, marker in _markers(proc)
        if marker == own and not _kept(pid, keep, proc)
    ]


def reap_orphans(
    state_dir: Path, proc: Path = _PROC, *, keep: frozenset[int] = frozenset()
) -> list[Orphan]:
    """SIGKILL every orphan of ``state_dir`` (and its process group); returns them."""
    orphans = find_orphans(state_dir, proc, keep=keep)
    for orphan in orphans:
        logger.warning(
            "reaping pid %d (%s): a sidecar process of llamasup pid %d, which is gone",
            orphan.pid, orphan.argv, orphan.owner,
        )  # fmt: skip
        kill_tree(orphan.pid)
    return orphans


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its process group (never llamasup's own group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        group = os.getpgid(pid)
        if group != os.getpgid(0):  # never our own group
            os.killpg(group, signal.SIGKILL)


def _kept(pid: int, keep: frozenset[int], proc: Path) -> bool:
    if not keep:
        return False
    if pid in keep:
        return True
    found = stat(pid, proc)
    return found is not None and (found.pgrp in keep or found.session in keep)


def _markers(proc: Path) -> Iterator[tuple[int, str]]:
    prefix = f"{MARKER}=".encode()
    own = os.getpid()
    try:
        entries = list(proc.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            environ = (entry / "environ").read_bytes()  # only our own user's are readable
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(prefix):
                yield int(entry.name), item[len(prefix) :].decode(errors="replace")
                break


def _argv(pid: int, proc: Path) -> str:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)[:200]
