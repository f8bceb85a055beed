"""``Run``: one incarnation of a sidecar's process, from spawn to reaped.

The ``Sidecar`` decides; a ``Run`` only reports and obeys. It receives the child's output as
protocol callbacks (so reading never waits on anyone and a chatty child never blocks on a
full pipe), feeds it into the sidecar's ``ProcessLog``, spots the few log lines that matter
(readiness markers, bind failure), notices the exit the moment the child watcher reaps it,
and knows how to end the process group: SIGTERM, grace, SIGKILL, always reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import cast

from llamasup.sidecars.process import kill_group, sweep_group, terminate_group
from llamasup.sidecars.proclog import LogLine, ProcessLog, Stream

#: lines after which /health is likely to answer 200: poll at once instead of waiting
READY_MARKERS = ("model loaded", "listening on", "server is listening")
#: llama-server's ready line: printed right after /health turns 200 (``is_ready`` is set just
#: before it, in every build seen). Not "listening": older builds print "HTTP server is
#: listening" before loading the model, while /health still answers 503
READY_LINE = "model loaded"
#: llama-server prints this and exits 1 when its port is taken
BIND_FAILED_MARKER = "couldn't bind HTTP server socket"
#: how long to wait, after the exit, for output still in the pipes (for the error's log tail)
PIPE_DRAIN_TIMEOUT = 1.0

_STREAMS: dict[int, Stream] = {1: "stdout", 2: "stderr"}


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` seconds for ``event``; True if it is set."""
    if event.is_set():
        return True
    if seconds <= 0:
        return False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


async def bounded(awaitable: Awaitable[None], seconds: float) -> bool:
    """Await ``awaitable`` for at most ``seconds``; False if it did not finish."""
    try:
        async with asyncio.timeout(seconds):
            await awaitable
    except TimeoutError:
        return False
    return True


def retrieve(task: asyncio.Task[None]) -> None:
    """Done-callback for tasks whose errors are reported elsewhere: mark them as seen."""
    if not task.cancelled():
        task.exception()


class Run(asyncio.SubprocessProtocol):
    """Protocol for one child; ``attach`` once the transport exists."""

    def __init__(
        self, port: int, log: ProcessLog, announce: Callable[[int], str] | None = None
    ) -> None:
        self.port = port
        self.log = log
        #: the log's note for the start, given the pid: written before any of the child's
        #: output, which may already be waiting when the transport is made
        self._announce = announce
        self.started = time.monotonic()
        self.pid = 0
        self.returncode: int | None = None
        self.bind_failed = False
        self.ready_marker_seen = False
        #: llama-server printed its ready line (``READY_LINE``)
        self.ready_line_seen = False
        #: output is searched for the readiness and bind-failure markers until the sidecar
        #: is ready (``settled``); a ready server logs several lines per request
        self.watching_output = True
        #: set on a readiness marker, a bind failure or the exit: whoever polls, look now
        self.wake = asyncio.Event()
        #: set on a bind failure or the exit: any probe in flight is pointless
        self.doomed = asyncio.Event()
        #: set once the process was reaped and its pipes drained: the run is over
        self.exited = asyncio.Event()
        self._transport: asyncio.SubprocessTransport | None = None
        #: duplicates of the pipes' read ends made for a hand-over (see ``detach``)
        self._detached: dict[int, int] = {}
        self._open_pipes = {1, 2}
        self._pipes_closed = asyncio.Event()
        self._finisher: asyncio.Task[None] | None = None
        self._terminator: asyncio.Task[None] | None = None

    # -- protocol callbacks (event-loop thread) ------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transport implements the interface without subclassing it
        self._transport = cast(asyncio.SubprocessTransport, transport)
        self.pid = self._transport.get_pid()
        if self._announce is not None:
            self.log.note(self._announce(self.pid))

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        lines = self.log.feed(_STREAMS.get(fd, "stdout"), raw)
        if self.watching_output:
            self._inspect(lines)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._inspect(self.log.flush(_STREAMS.get(fd, "stdout")))
        self._open_pipes.discard(fd)
        if not self._open_pipes:
            self._pipes_closed.set()

    def process_exited(self) -> None:
        assert self._transport is not None
        self._exited_with(self._transport.get_returncode())

    def _exited_with(self, returncode: int | None) -> None:
        self.returncode = returncode
        # stragglers in the group would keep the pipes open (and the GPU busy)
        sweep_group(self.pid)
        self._finisher = asyncio.get_running_loop().create_task(self._finish())

    def settled(self) -> None:
        """The sidecar is ready: its output no longer says anything about its start."""
        self.watching_output = False

    def _inspect(self, lines: list[LogLine]) -> None:
        for line in lines:
            text = line.text
            if BIND_FAILED_MARKER in text:
                self.bind_failed = True
                self.wake.set()
                self.doomed.set()
            elif any(marker in text for marker in READY_MARKERS):
                self.ready_marker_seen = True
                self.ready_line_seen = self.ready_line_seen or READY_LINE in text
                self.wake.set()

    async def _finish(self) -> None:
        await wait_event(self._pipes_closed, PIPE_DRAIN_TIMEOUT)
        self._release()
        self.exited.set()
        self.wake.set()
        self.doomed.set()

    # -- commands ------------------------------------------------------------------------

    async def terminate(self, grace: float) -> None:
        """End the process group and wait until reaped; concurrent callers share one ending."""
        if self._terminator is None:
            self._terminator = asyncio.get_running_loop().create_task(self._terminate(grace))
        await asyncio.shield(self._terminator)

    async def _terminate(self, grace: float) -> None:
        if self.exited.is_set() or not self._attached():
            return
        if grace > 0:
            self.log.note(f"SIGTERM to process group {self.pid}")
            self._signal_group(signal.SIGTERM)
            if await wait_event(self.exited, grace):
                return
            self.log.note(f"still running after {grace:g}s grace: SIGKILL")
        self._signal_group(getattr(signal, "SIGKILL", signal.SIGTERM))
        await self.exited.wait()

    def abandon(self) -> None:
        """Synchronous last resort (loop shutting down): SIGKILL the group, don't wait."""
        if self._attached() and not self.exited.is_set():
            self._signal_group(getattr(signal, "SIGKILL", signal.SIGTERM))

    # -- a hand-over to the next llamasup (see ``llamasup.sidecars.handover``) ------------

    def detach(self) -> dict[int, int]:
        """Stop reading the child's output and return inheritable duplicates of the pipes'
        read ends (1: stdout, 2: stderr) for the llamasup that ``execve`` is about to start.

        What the child writes from now on waits in the pipes for that llamasup; a line begun
        and not yet ended stays in the log's buffer (``ProcessLog.take_partial``). The
        process itself is untouched. ``reattach`` undoes this if the hand-over fails.
        """
        for fd, pipe in self._read_pipes().items():
            pipe.pause_reading()
            # asyncio gives the child pipes; uvloop gives it socket pairs (either reads alike)
            raw = pipe.get_extra_info("pipe") or pipe.get_extra_info("socket")
            if raw is None or fd in self._detached:
                continue
            duplicate = os.dup(raw.fileno())
            os.set_inheritable(duplicate, True)
            self._detached[fd] = duplicate
        return dict(self._detached)

    def reattach(self) -> None:
        """The hand-over did not happen: read the pipes again, drop the duplicates."""
        for duplicate in self._detached.values():
            with contextlib.suppress(OSError):
                os.close(duplicate)
        self._detached.clear()
        for pipe in self._read_pipes().values():
            if not pipe.is_closing():
                pipe.resume_reading()

    # -- what differs for a process this llamasup did not spawn (``AdoptedRun``) ---------

    def _attached(self) -> bool:
        return self._transport is not None

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._transport is not None
        if sig == signal.SIGTERM:
            terminate_group(self._transport)
        else:
            kill_group(self._transport)

    def _read_pipes(self) -> dict[int, asyncio.ReadTransport]:
        if self._transport is None:
            return {}
        pipes: dict[int, asyncio.ReadTransport] = {}
        for fd in (1, 2):
            pipe = self._transport.get_pipe_transport(fd)
            # uvloop's read transports implement the interface without subclassing it
            if pipe is not None and hasattr(pipe, "pause_reading"):
                pipes[fd] = cast(asyncio.ReadTransport, pipe)
        return pipes

    def _release(self) -> None:
        if self._transport is not None:
            self._transport.close()
