"""What ``/proc/PID/stat`` says about a process: enough to tell whether a pid is still the
process it was (start time), whether it is our child (parent), and its process group.

Linux only; elsewhere every lookup finds nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    #: R, S, D, Z (zombie: exited, not yet reaped), X, ...
    state: str
    ppid: int
    pgrp: int
    session: int
    #: clock ticks since boot; with the pid, names one process for the life of the host
    start_time: str

    @property
    def exited(self) -> bool:
        return self.state in ("Z", "X")


def stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    """``pid``'s stat line, or None when there is no such process (or no /proc)."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = text.rpartition(")")[2].split()
    if len(fields) < 20:
        return None
    try:
        return ProcStat(pid, fields[0], int(fields[1]), int(fields[2]), int(fields[3]), fields[19])
    except ValueError:
        return None


def start_time(pid: int, proc: Path = PROC) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    found = stat(pid, proc)
    return None if found is None else found.start_time
