"""Noticing that a child of ours exited, on the event loop, and reaping it.

A pidfd (``os.pidfd_open``, Linux 5.3+) is a descriptor that turns readable when the process
has exited: the loop watches it like a socket, so no thread waits and no SIGCHLD handler is
involved (asyncio's and libuv's child handling only reap the children they spawned
themselves, so they never take ours). Without a pidfd (an older kernel) a thread blocks in
``waitpid`` for the child, as asyncio's own threaded watcher does.

Used for the sidecars this llamasup spawns (``child.py``) and for the ones it inherited in a
planned restart (``adopted.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable

#: collects the exit status of one child: its return code in asyncio's convention (negative:
#: killed by that signal), or None if it has not exited (``block``: wait until it has)
Collect = Callable[[bool], int | None]


def reap(pid: int, *, block: bool = False) -> int | None:
    """Collect ``pid``'s exit status if it is a child of ours that exited: its return code in
    asyncio's convention (negative: killed by that signal), else None."""
    try:
        found, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return None
    if found == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def watch_exit(
    pid: int, on_exit: Callable[[int | None], None], collect: Collect | None = None
) -> Callable[[], None]:
    """Call ``on_exit(returncode)`` on the event loop once ``pid`` (a child of ours) exits,
    reaping it with ``collect`` (default: ``waitpid``); returns a function that stops
    watching. Call on the event-loop thread."""
    loop = asyncio.get_running_loop()
    gather: Collect = collect if collect is not None else (lambda block: reap(pid, block=block))
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        loop.call_soon(on_exit, gather(False))
        return lambda: None
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is None:

        def wait() -> None:
            code = gather(True)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                loop.call_soon_threadsafe(on_exit, code)

        threading.Thread(target=wait, name=f"waitpid-{pid}", daemon=True).start()
        return lambda: None
    handle = pidfd
    watching = True

    def stop() -> None:
        nonlocal watching
        if watching:
            watching = False
            loop.remove_reader(handle)
            os.close(handle)

    def readable() -> None:
        stop()
        # readable once the whole thread group is gone, which is when waitpid can take it
        on_exit(gather(False))

    loop.add_reader(handle, readable)
    return stop
