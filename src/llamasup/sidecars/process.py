"""Process plumbing for sidecars: spawning, and signalling the child's process group.

Kept apart from ``sidecar.py`` so that everything platform-specific sits in one small room.
POSIX-only calls are guarded so the module imports (and mostly works) on Windows.

**Where children are spawned matters.** On Linux each child asks the kernel for SIGKILL when
its parent dies (``PR_SET_PDEATHSIG``), so a SIGKILLed llamasup leaves no llama-server
behind. The kernel ties that to the *thread* that forked, not the process: ``spawn`` must be
called on a thread that lives as long as the supervisor. ``spawn`` forks on the thread that
calls it, the event-loop thread, which is exactly that thread; never call ``spawn`` through
``run_in_executor`` or ``anyio.to_thread`` (a planned restart ``execve``s in place, which
ends every other thread, and with it their children's parent).

**How the child asks for it.** A ``preexec_fn`` would make the ``prctl`` call in the child,
but any ``preexec_fn`` forces CPython to ``fork()`` (copying the page tables of the whole
front) instead of ``vfork()``, and the event loop waits for that: every proxied stream stalls
for the fork. Where util-linux ``setpriv`` knows ``--pdeathsig`` (2.33+), the child is
``setpriv --pdeathsig KILL -- <argv>`` instead: spawned without a ``preexec_fn`` (so
``Popen`` vforks), it arms the signal and ``exec``s the server, same pid. The
``preexec_fn`` is the fallback without it. One difference: the preexec path also kills a
child whose parent died before the ``prctl`` (a window of microseconds); with ``setpriv``
such a child outlives it, and the next llamasup reaps it by its marker (``orphans.py``).

**Who forks.** On Linux ``spawn`` calls ``subprocess.Popen`` itself, on the loop thread, and
hands the child to a ``ChildTransport`` (``child.py``: pipes on the loop, exit through a
pidfd). ``loop.subprocess_exec`` would go through libuv under uvloop, which always forks,
whatever the ``preexec_fn``. Elsewhere (macOS, Windows) the loop's own spawn is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from llamasup.sidecars.child import ChildTransport

P = TypeVar("P", bound=asyncio.SubprocessProtocol)

#: spawn through ``setpriv --pdeathsig`` where it can (see the module docstring); tests turn
#: it off to exercise the ``preexec_fn`` fallback
PREFER_SETPRIV = True

IS_POSIX = sys.platform != "win32"
IS_LINUX = sys.platform.startswith("linux")

#: on Linux, spawn with ``Popen`` on the loop thread (see the module docstring); tests and
#: ``bench/bench_spawn.py`` turn it off to compare with the loop's own spawn
PREFER_POPEN = IS_LINUX and hasattr(os, "pidfd_open")

_PR_SET_PDEATHSIG = 1


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn that arms PR_SET_PDEATHSIG(SIGKILL) in the child, or None off Linux.

    Everything is resolved here in the parent: after fork, the child only makes the call.
    """
    if not IS_LINUX:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    kill_signal = int(signal.SIGKILL)

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, kill_signal, 0, 0, 0)
        # the parent may have died between fork and prctl: then nobody would send the signal
        if os.getppid() != parent:
            os.kill(os.getpid(), kill_signal)

    return arm


@functools.cache
def _setpriv() -> str | None:
    """util-linux ``setpriv`` if it is installed and knows ``--pdeathsig``; else None."""
    if not IS_LINUX:
        return None
    found = shutil.which("setpriv")
    if found is None:
        return None
    try:
        shown = subprocess.run(
            [found, "--help"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found if "--pdeathsig" in shown.stdout else None


def _executable(program: str, env: Mapping[str, str]) -> None:
    """Raise the OSError an exec of ``program`` would (as ``spawn`` did before ``setpriv``
    stood in front of it: then only ``setpriv``'s exit would say so)."""
    path = program if os.sep in program else shutil.which(program, path=env.get("PATH"))
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    if not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)


def spawner() -> str:
    """Who starts the child for ``spawn`` here: ``popen`` (Linux) or ``loop``."""
    return "popen" if PREFER_POPEN else "loop"


def spawn_method() -> str:
    """How ``spawn`` arms PR_SET_PDEATHSIG here: ``setpriv``, ``preexec`` or ``none``."""
    if not IS_LINUX:
        return "none"
    return "setpriv" if PREFER_SETPRIV and _setpriv() is not None else "preexec"


async def spawn(
    argv: list[str],
    env: Mapping[str, str],
    protocol_factory: Callable[[], P],
    cwd: Path | None = None,
) -> tuple[asyncio.SubprocessTransport, P]:
    """Start ``argv`` without a shell, in its own process group, stdout/stderr piped, stdin
    from /dev/null, no descriptors of ours inherited.

    Output and the exit arrive as ``SubprocessProtocol`` callbacks, not through
    ``Process.wait()``, which (Python 3.11) also waits for the pipes to close and so hangs
    while any grandchild holds them. Call on the event-loop thread (see the module
    docstring). Raises ``OSError`` when the binary cannot be executed.
    """
    options: dict[str, Any] = {}
    if IS_POSIX:
        options["start_new_session"] = True
        if spawn_method() == "setpriv":
            _executable(argv[0], env)
            setpriv = _setpriv()
            assert setpriv is not None
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        else:
            preexec = _pdeathsig_preexec()
            if preexec is not None:
                options["preexec_fn"] = preexec
    else:
        options["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
    if PREFER_POPEN:
        protocol = protocol_factory()
        # blocking on purpose: on the loop thread (PDEATHSIG), and only until the vforked
        # child has exec'd, which is the whole stall this path exists to shorten
        popen = subprocess.Popen(  # noqa: ASYNC220
            argv,
            bufsize=0,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            **options,
        )
        return await ChildTransport.start(popen, protocol), protocol
    loop = asyncio.get_running_loop()
    return await loop.subprocess_exec(
        protocol_factory,
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        **options,
    )


def terminate_group(transport: asyncio.SubprocessTransport) -> None:
    """Ask the child (and anything it started) to exit: SIGTERM to its process group."""
    _signal(transport, signal.SIGTERM)


def kill_group(transport: asyncio.SubprocessTransport) -> None:
    """Kill the child's whole process group: SIGKILL, no negotiation."""
    _signal(transport, getattr(signal, "SIGKILL", signal.SIGTERM))


def sweep_group(pid: int) -> None:
    """Right after the leader exited: SIGKILL stragglers still in its process group."""
    if IS_POSIX:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group a child leads (POSIX). Only while the child is not reaped:
    until then its pid, and so its group's id, cannot belong to anyone else."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _signal(transport: asyncio.SubprocessTransport, sig: signal.Signals) -> None:
    if transport.get_returncode() is not None:
        return
    if IS_POSIX:
        # the child leads its own session and group, so its pgid is its pid
        signal_group(transport.get_pid(), sig)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if sig == signal.SIGTERM:
            transport.terminate()
        else:
            transport.kill()
