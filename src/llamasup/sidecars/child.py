"""``ChildTransport``: a child started by ``subprocess.Popen`` on the event-loop thread, its
output pipes and its exit fed into the loop, as ``loop.subprocess_exec`` would feed them to a
``SubprocessProtocol`` (the sidecar's ``Run``).

Why not ``loop.subprocess_exec``: under uvloop, which ``serve`` runs on, it goes through
libuv's spawn, which always ``fork()``s. The kernel then copies the page tables of the whole
front, and the loop (every proxied stream) waits for it, ~5 ms per spawn on a small host.
``Popen`` without a ``preexec_fn`` ``vfork()``s instead (the parent only waits until the
child has ``exec``'d) and closes inherited descriptors with one ``close_range``. The exit is
watched through a pidfd (``exitwatch.py``) and the pipes through ``loop.connect_read_pipe``:
the same on both event loops, with no thread per child (asyncio's threaded child watcher)
and no SIGCHLD handler.

Callbacks reach the protocol in the order asyncio's subprocess transport keeps:
``connection_made`` first, then output and the exit as they happen, ``connection_lost``
once the child is reaped and both pipes are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any, Protocol

from llamasup.sidecars.exitwatch import watch_exit


class PipeSink(Protocol):
    """Who gets a child's output: a ``SubprocessProtocol`` or a transport in front of one."""

    def pipe_data_received(self, fd: int, data: bytes) -> None: ...

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None: ...


class PipeReader(asyncio.Protocol):
    """Feeds one output pipe of a child (``fd`` 1: stdout, 2: stderr) into a sink."""

    def __init__(self, sink: PipeSink, fd: int) -> None:
        self._sink = sink
        self._fd = fd

    def data_received(self, data: bytes) -> None:
        self._sink.pipe_data_received(self._fd, data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._sink.pipe_connection_lost(self._fd, exc)


class ChildTransport(asyncio.SubprocessTransport):
    """Build with :meth:`start` from a ``Popen`` made with ``stdout``/``stderr`` pipes and
    ``bufsize=0``; the transport owns the ``Popen`` from then on (and reaps it)."""

    def __init__(
        self, popen: subprocess.Popen[bytes], protocol: asyncio.SubprocessProtocol
    ) -> None:
        super().__init__({"subprocess": popen})
        self._loop = asyncio.get_running_loop()
        self._popen = popen
        self._protocol = protocol
        self._pipes: dict[int, asyncio.ReadTransport] = {}
        #: open from the start: the child may exit before the second pipe is connected, and
        #: connection_lost must still wait for that pipe's output
        self._open_pipes = {fd for fd, stream in self._streams() if stream is not None}
        #: calls held until the protocol has had ``connection_made``; None once it has
        self._pending: list[tuple[Callable[..., object], tuple[Any, ...]]] | None = []
        self._exited = False
        self._closed = False
        self._finished = False
        self._stop_watch: Callable[[], None] = lambda: None

    @classmethod
    async def start(
        cls, popen: subprocess.Popen[bytes], protocol: asyncio.SubprocessProtocol
    ) -> ChildTransport:
        """Connect ``popen``'s pipes to the loop and watch its exit. If this is cancelled or
        fails, the child is killed (and still reaped), as ``loop.subprocess_exec`` does."""
        transport = cls(popen, protocol)
        transport._stop_watch = watch_exit(popen.pid, transport._process_exited, transport._collect)
        # not cancelled half-way: a pipe whose connection was cut short has no owner (uvloop
        # then closes its descriptor behind the file object's back)
        connecting = asyncio.ensure_future(transport._connect_pipes())
        try:
            await asyncio.shield(connecting)
        except BaseException:
            if not connecting.done():
                with contextlib.suppress(BaseException):
                    await connecting
            transport._pending = None
            transport._protocol = asyncio.SubprocessProtocol()  # nobody is listening
            transport.close()
            raise
        protocol.connection_made(transport)
        pending, transport._pending = transport._pending, None
        for callback, args in pending or ():
            callback(*args)
        return transport

    def _streams(self) -> tuple[tuple[int, Any], ...]:
        return ((1, self._popen.stdout), (2, self._popen.stderr))

    async def _connect_pipes(self) -> None:
        for fd, stream in self._streams():
            if stream is None:
                continue
            pipe, _ = await self._loop.connect_read_pipe(
                lambda fd=fd: PipeReader(self, fd),  # type: ignore[misc]
                stream,
            )
            # uvloop's read transports implement the interface without subclassing it
            self._pipes[fd] = pipe

    # -- events (event-loop thread) --------------------------------------------------------

    def _deliver(self, callback: Callable[..., object], *args: Any) -> None:
        if self._pending is not None:
            self._pending.append((callback, args))
        else:
            callback(*args)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._deliver(self._protocol.pipe_data_received, fd, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open_pipes.discard(fd)
        self._deliver(self._protocol.pipe_connection_lost, fd, exc)
        self._try_finish()

    def _collect(self, block: bool) -> int | None:
        # through the Popen, so that it knows the child is gone (its returncode set) and
        # never waits for the pid again, which by then may name another child of ours
        return self._popen.wait() if block else self._popen.poll()

    def _process_exited(self, returncode: int | None) -> None:
        self._exited = True
        self._deliver(self._protocol.process_exited)
        self._try_finish()

    def _try_finish(self) -> None:
        if self._exited and not self._open_pipes and not self._finished:
            self._finished = True
            self._deliver(self._protocol.connection_lost, None)

    # -- the SubprocessTransport interface -------------------------------------------------

    def get_pid(self) -> int:
        return self._popen.pid

    def get_returncode(self) -> int | None:
        return self._popen.returncode

    def get_pipe_transport(self, fd: int) -> asyncio.ReadTransport | None:
        return self._pipes.get(fd)

    def send_signal(self, signal: int) -> None:
        if self._popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._popen.pid, signal)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(getattr(signal, "SIGKILL", signal.SIGTERM))

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.SubprocessProtocol)
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop reading; a child still running is killed (asyncio's transports do the same)
        and reaped when it is gone."""
        if self._closed:
            return
        self._closed = True
        for pipe in self._pipes.values():
            pipe.close()
        for fd, stream in self._streams():
            if stream is not None and fd not in self._pipes:
                # never handed to a pipe transport: connecting it failed (uvloop may have
                # closed the descriptor already)
                with contextlib.suppress(OSError):
                    stream.close()
                self._open_pipes.discard(fd)
        self._try_finish()
        if not self._exited:
            self.kill()
