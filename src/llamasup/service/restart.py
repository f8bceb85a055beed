"""A planned restart: llamasup replaces its own program in place and keeps its sidecars.

``llamasup restart`` (``POST /api/restart``), ``SIGUSR2`` and ``systemctl reload llamasup``
ask for it. The sequence (``serve.run`` drives it):

1. **Preflight**: the program that is about to run (the same command line, so an upgraded
   install is what runs) loads the profiles and checks what ``serve`` checks before it
   listens (``serve --preflight``). A failure refuses the restart; nothing changes.
2. **Drain**: the front stops accepting (its listening sockets stay open: connections wait
   in the kernel's listen queue) and the requests in flight finish, bounded by
   ``server.stop_grace``.
3. **Hand over**: reconciling stops; every ready sidecar is detached (its pipes stop being
   read, inheritable duplicates are kept), sidecars that are not ready are stopped, and the
   hand-over file is written (``handover_file``).
4. **execve** of the same interpreter with the same arguments. The pid stays the same, so the
   sidecars remain its children: ``PR_SET_PDEATHSIG`` (which fires when the parent *thread*
   exits, and an exec is not an exit) never fires, and systemd's main pid does not change.
5. The new image reads the hand-over file, adopts what is still wanted and healthy, serves
   on the inherited sockets, and only then starts reconciling.

Anything that fails before step 4 puts the old image back to serving as it was.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from llamasup.errors import LlamasupError
from llamasup.service.handover_file import ENV

logger = logging.getLogger("llamasup")

#: the new program must load the profiles and pass its checks within this
PREFLIGHT_TIMEOUT = 60.0
#: what a preflight failure shows of the new program's output
PREFLIGHT_TAIL = 2000


class RestartError(LlamasupError):
    """A restart cannot be done now; ``code`` is the control API's error code."""

    def __init__(self, message: str, code: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def program() -> list[str]:
    """The command line that started this llamasup (interpreter included), to run again."""
    return [sys.executable, *sys.orig_argv[1:]]


class Restarter:
    """Takes restart requests: preflight, then ``requested`` is set for ``serve`` to act on."""

    def __init__(self, argv: Sequence[str], environ: Mapping[str, str] | None = None) -> None:
        self.argv = list(argv)
        self._environ = environ
        self.requested = asyncio.Event()
        #: ``time.monotonic()`` of the accepted request
        self.requested_at = 0.0
        self.trigger = ""
        self._checking = False

    async def request(self, trigger: str) -> None:
        """Check the new program and, if it passes, ask for the restart (returns then; the
        restart itself begins once the caller's answer is sent). Raises RestartError."""
        if self.requested.is_set() or self._checking:
            raise RestartError("a restart is already under way", "restart_in_progress", 409)
        self._checking = True
        try:
            problem = await preflight(self.argv, self._environ)
        finally:
            self._checking = False
        if problem is not None:
            logger.error("restart refused (%s): %s", trigger, problem)
            raise RestartError(
                f"restart refused: the new llamasup would not start: {problem}",
                "restart_refused",
                422,
            )
        logger.warning("restart (%s): handing the sidecars over to a new llamasup", trigger)
        self.requested_at = time.monotonic()
        self.trigger = trigger
        self.requested.set()

    def cancelled(self) -> None:
        """The restart failed before the exec: this llamasup keeps serving."""
        self.requested.clear()


async def preflight(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> str | None:
    """Run ``argv --preflight``; None if it passed, else what it said."""
    env = dict(os.environ if environ is None else environ)
    for name in (ENV, "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
        env.pop(name, None)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            "--preflight",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
    except OSError as exc:
        return f"cannot run {argv[0]}: {exc}"
    try:
        async with asyncio.timeout(PREFLIGHT_TIMEOUT):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return f"{' '.join(argv)} --preflight did not finish in {PREFLIGHT_TIMEOUT:g}s"
    if process.returncode == 0:
        return None
    text = output.decode("utf-8", "replace").strip()
    return f"exit {process.returncode}: {text[-PREFLIGHT_TAIL:] or '(no output)'}"


def execute(argv: Sequence[str], handover: Path) -> NoReturn:
    """Replace this program with ``argv`` (same pid), telling it where the hand-over is.

    Must run on the main thread: the sidecars were forked by it (the event loop's thread), and
    the kernel ties their ``PR_SET_PDEATHSIG`` to that thread; an exec from another thread
    would end the main one and kill them. Raises OSError if the exec fails.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("a restart must exec from the main thread")
    env = dict(os.environ)
    env[ENV] = str(handover)
    # a second reload or restart signal while the new image starts must not kill it (their
    # default action): ignored dispositions survive an exec, and the new image installs its
    # own handlers once it is ready for them
    signums = [getattr(signal, name) for name in ("SIGHUP", "SIGUSR2") if hasattr(signal, name)]
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signums}
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        os.execve(argv[0], [sys.orig_argv[0], *argv[1:]], env)  # noqa: S606 - no shell
    except OSError:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        raise
    raise AssertionError("unreachable")  # pragma: no cover
