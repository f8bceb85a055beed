"""``AdoptedRun``: a sidecar process this llamasup image did not spawn but inherited.

After a planned restart (``execve`` of llamasup in place, see :mod:`llamasup.sidecars.handover`)
the sidecars are still children of this pid, and the read ends of their stdout and stderr pipes
are still open at the descriptor numbers the hand-over record names. An ``AdoptedRun`` picks
them up: it reads the pipes again (nothing the child wrote meanwhile is lost: it waited in the
pipe), notices the exit through a pidfd (a pollable handle on the process, Linux 5.3+) and
reaps the child itself, and signals its process group like a spawned ``Run``. Everything a
``Sidecar`` does with a run (health watch, stop, SIGKILL) works unchanged.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Mapping

from llamasup.sidecars.child import PipeReader
from llamasup.sidecars.exitwatch import watch_exit
from llamasup.sidecars.process import signal_group
from llamasup.sidecars.proclog import ProcessLog
from llamasup.sidecars.run import Run


class AdoptedRun(Run):
    """Build with :meth:`attach`; the process is ready (it was handed over ready)."""

    def __init__(self, port: int, log: ProcessLog, pid: int) -> None:
        super().__init__(port, log)
        self.pid = pid
        self.ready_marker_seen = True
        self._pipes: dict[int, asyncio.ReadTransport] = {}
        self._stop_watch: Callable[[], None] = lambda: None
        self._gone = False

    @classmethod
    async def attach(
        cls,
        port: int,
        log: ProcessLog,
        pid: int,
        pipes: Mapping[int, int],
        partial: Mapping[int, bytes] | None = None,
    ) -> AdoptedRun:
        """Take over ``pid``: ``pipes`` maps 1/2 (stdout/stderr) to inherited descriptors
        (now owned by the run), ``partial`` the unfinished line of each that the previous
        llamasup had read."""
        run = cls(port, log, pid)
        for fd, data in (partial or {}).items():
            if data:
                run.pipe_data_received(fd, data)
        loop = asyncio.get_running_loop()
        run._open_pipes = set()
        for fd, number in sorted(pipes.items()):
            pipe = os.fdopen(number, "rb", buffering=0)
            transport, _ = await loop.connect_read_pipe(
                lambda fd=fd: PipeReader(run, fd),  # type: ignore[misc]
                pipe,
            )
            run._pipes[fd] = transport
            run._open_pipes.add(fd)
        if not run._open_pipes:
            run._pipes_closed.set()
        run._stop_watch = watch_exit(pid, run._exited_with)
        run.started = time.monotonic()
        return run

    def _attached(self) -> bool:
        return True

    def _signal_group(self, sig: signal.Signals) -> None:
        # reaped only by our own exit watch, which sets returncode: until then the pid (and
        # its group's id) is still this process's
        if not self._gone:
            signal_group(self.pid, sig)

    def _exited_with(self, returncode: int | None) -> None:
        self._gone = True
        self._stop_watch()
        super()._exited_with(returncode)

    def _read_pipes(self) -> dict[int, asyncio.ReadTransport]:
        return {fd: pipe for fd, pipe in self._pipes.items() if not pipe.is_closing()}

    def _release(self) -> None:
        self._stop_watch()
        for pipe in self._pipes.values():
            pipe.close()
