"""Handing a ready sidecar process to the next llamasup, and checking one that was handed over.

A planned restart replaces llamasup's program in place (``execve``: same pid, so the
sidecars stay its children and their ``PR_SET_PDEATHSIG`` never fires). What survives the
exec is the processes and the descriptors left inheritable; a :class:`ProcessHandle` is
what the next image needs besides them: which pid (and its start time, which tells a reused
pid apart), its port, the descriptors of its output pipes, the key it requires.

Before adopting a handle the next llamasup asks :func:`inspect`; a handle is adopted only if
the process is alive, is the same process, is its child, and answers its health check with
its key. Anything else is either left alone (not ours: gone, or its pid now names another
process) or stopped (ours, but not fit to keep).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from llamasup.sidecars.exitwatch import reap
from llamasup.sidecars.health import http_status
from llamasup.sidecars.procfs import stat


@dataclass(frozen=True)
class ProcessHandle:
    """A ready sidecar process, as one llamasup image leaves it to the next."""

    pid: int
    #: ``/proc/PID/stat`` start time when it was handed over: the same pid with another start
    #: time is another process
    start_time: str
    port: int
    #: 1 (stdout), 2 (stderr) -> the inherited descriptor of that pipe's read end
    pipes: Mapping[int, int] = field(default_factory=dict)
    #: per pipe, a line begun and not yet ended when the previous image stopped reading
    partial: Mapping[int, bytes] = field(default_factory=dict)
    #: the key this run requires (``LLAMA_API_KEY``), None for an open sidecar
    auth_key: str | None = None
    started_at: float | None = None
    ready_at: float | None = None
    restarts: int = 0

    @property
    def auth_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        if self.auth_key is None:
            return ()
        return ((b"authorization", b"Bearer " + self.auth_key.encode()),)

    def close_pipes(self) -> None:
        """Close the inherited descriptors (a handle that is not adopted)."""
        for number in self.pipes.values():
            with contextlib.suppress(OSError):
                os.close(number)


class Verdict(StrEnum):
    """What to do with a handed-over process."""

    #: alive, the same process, our child, healthy with its key: keep it
    ADOPT = "adopt"
    #: no such process any more: nothing to do
    GONE = "gone"
    #: the pid now names another process: never touched
    FOREIGN = "foreign"
    #: the same process, but not our child (the llamasup that handed it over died): stopped
    ORPHANED = "orphaned"
    #: the same process, our child, but it did not answer its health check with its key: stopped
    UNHEALTHY = "unhealthy"


#: an endpoint llama-server guards with its key (``/health`` is open to anyone)
KEYED_PATH = "/props"


async def inspect(
    handle: ProcessHandle, *, host: str, health_path: str, limit: float = 2.0
) -> tuple[Verdict, str]:
    """Whether ``handle`` may be adopted, and why not."""
    found = stat(handle.pid)
    if found is None:
        return Verdict.GONE, f"pid {handle.pid} is gone"
    if found.exited:
        if found.start_time == handle.start_time and found.ppid == os.getpid():
            # it died during the restart: our child, so ours to reap. Blocking, off the loop:
            # a killed multi-threaded process shows as a zombie before its last thread is
            # gone, and only then can it be waited for
            code = await asyncio.to_thread(reap, handle.pid, block=True)
            return Verdict.GONE, f"pid {handle.pid} exited with code {code} during the restart"
        return Verdict.GONE, f"pid {handle.pid} is gone"
    if found.start_time != handle.start_time:
        return Verdict.FOREIGN, (
            f"pid {handle.pid} is another process now (started at tick {found.start_time}, "
            f"not {handle.start_time})"
        )
    if found.ppid != os.getpid():
        return Verdict.ORPHANED, f"pid {handle.pid} is not a child of this llamasup"
    auth = handle.auth_headers
    code = await http_status(host, handle.port, health_path, limit=limit, headers=auth)
    if code != 200:
        answer = code or "nothing"
        return Verdict.UNHEALTHY, f"{health_path} on port {handle.port} answered {answer}"
    if auth:
        # /health answers anyone: only a guarded path proves that the server on this port is
        # the one whose key we hold
        code = await http_status(host, handle.port, KEYED_PATH, limit=limit, headers=auth)
        if code != 200:
            return Verdict.UNHEALTHY, (
                f"{KEYED_PATH} on port {handle.port} refused its key ({code or 'no answer'})"
            )
    return Verdict.ADOPT, "healthy"
