"""Watching the profile path and asking for a reload, for as long as llamasup runs.

Two watches make one *generation*:

* the served directory (for a single file, its parent), resolved, recursively: edits, editors
  that save by rename, Kubernetes ConfigMap mounts that swap a ``..data`` symlink;
* that directory's parent, not recursively, for the served name itself: the directory deleted
  and created again, or a symlink to it replaced by a rename (git-sync swaps
  ``profiles -> rev-abc`` for ``rev-def`` so). An inotify watch stays on the directory it
  was given; after either change it would watch a directory nobody serves any more.

A change of the served name ends the generation; the next one resolves the path again, reads
it and watches the directory it now is. So does a check every ``VERIFY_INTERVAL`` that the
path is still the directory being watched (catching what no event reports: an ancestor
replaced). A watch that cannot be set up, ends or fails is retried with backoff; meanwhile
status says the watch is lost (``profiles.watch``) and the log says so once.

After a change the files are read until their content stays the same for ``SETTLE`` seconds,
and exactly that content is reloaded: a write that pauses between its halves is never
adopted half-written (a valid but truncated file would stop the models it lacks). The reload
compares content revisions, so a spurious event changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llamasup.errors import ProfileError, ProfileIssue
from llamasup.profiles.load import ProfileTexts, read_texts
from llamasup.service import inotify
from llamasup.service.inotify import Change

logger = logging.getLogger(__name__)

#: how long events are gathered into one batch at most (ms)
DEBOUNCE_MS = 60
#: a batch ends once this passes without another event (ms); off Linux, watchfiles' step: how
#: often its thread wakes to look (the inotify watch on Linux wakes only for an event)
STEP_MS = 20
#: how long the files must read the same before they are reloaded (s)
SETTLE = 0.25
#: how often the served path is checked to still be the directory being watched (s)
VERIFY_INTERVAL = 2.0
#: waits between attempts to watch again after a failure (s): doubling from the first
RETRY_INITIAL = 0.5
RETRY_MAX = 30.0

WatchState = Literal["off", "starting", "watching", "lost"]
Reload = Callable[[str, ProfileTexts | None], Awaitable[object]]


@dataclass
class WatchStatus:
    """What status shows of the watch (``profiles.watch``; see docs/control-api.md)."""

    state: WatchState = "off"
    #: the directories watched (the served one, resolved, then its parent)
    paths: tuple[str, ...] = ()
    #: when the state began (Unix seconds)
    since: float | None = None
    #: why the watch is lost
    error: str | None = None
    #: how many times a watch was lost since llamasup started
    losses: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "paths": list(self.paths),
            "since": self.since,
            "error": self.error,
            "losses": self.losses,
        }


class WatchLostError(Exception):
    """A watch that ended or failed; the watcher starts over after a wait."""


@dataclass(frozen=True)
class _Snapshot:
    """What the served path read as: its files' texts, or why they could not be read."""

    texts: ProfileTexts | None
    issues: tuple[ProfileIssue, ...] = ()


@dataclass(frozen=True)
class _Event:
    kind: Literal["content", "served", "lost"]
    detail: str = ""


class ProfileWatcher:
    """Watches ``path`` (a profile file or directory) and calls ``reload`` on each settled
    change, until cancelled."""

    def __init__(
        self,
        path: Path,
        reload: Reload,
        *,
        settle: float = SETTLE,
        verify_interval: float = VERIFY_INTERVAL,
        retry: tuple[float, float] = (RETRY_INITIAL, RETRY_MAX),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._reload = reload
        # decided once: a served directory deleted for a moment is still a directory
        self._single = None if path.is_dir() else path.name
        self._anchor = path if self._single is None else path.parent
        self._settle = settle
        self._verify = verify_interval
        self._retry = retry
        self._clock = clock
        self.status = WatchStatus()

    async def run(self) -> None:
        """Watch, and watch again after every loss, until cancelled."""
        self._set("starting")
        delay = self._retry[0]
        while True:
            try:
                await self._generation()
                delay = self._retry[0]  # the served path changed: watch it again at once
                continue
            except WatchLostError as exc:
                reason = str(exc)
            except OSError as exc:
                reason = f"cannot watch {self._anchor}: {_why(exc)}"
            except Exception as exc:  # a bug too must not end hot reload silently
                logger.exception("watching %s failed", self._anchor)
                reason = f"watching {self._anchor} failed: {type(exc).__name__}: {exc}"
            if self.status.state == "watching":  # a first loss after a good watch
                delay = self._retry[0]
            self._lose(f"{reason}; retrying in {delay:g}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry[1])

    # -- one generation: the path as it resolves now ----------------------------------------

    async def _generation(self) -> None:
        """Watch the served path as it resolves now; returns when it must be resolved again,
        raises WatchLostError when a watch fails."""
        anchor = self._anchor
        identity = _identity(anchor)
        async with _Pumps() as pumps:
            events = pumps.events
            pumps.start(anchor.parent, recursive=False, accept=_is_served(anchor))
            real = _real_directory(anchor)
            if real is not None:
                pumps.start(real, recursive=True, accept=_relevant(self._single))
            # each watch is set up when its task first runs (or has failed)
            await asyncio.sleep(0)
            _raise_lost(events)
            if real is None:
                self._lose(f"{anchor} does not exist; watching {anchor.parent} for it")
            else:
                self._set("watching", (str(real), str(anchor.parent)))
            # what is there now (or that nothing is) may be news: read it, settle, reload
            await self._follow(events, anchor, identity)

    async def _follow(self, events: asyncio.Queue[_Event], anchor: Path, identity: object) -> None:
        """Reload each settled change until the served path must be resolved again, starting
        with what is there now (it may have changed while nothing watched it)."""
        loop = asyncio.get_running_loop()
        seen: _Snapshot | None = await self._read()
        check_at = loop.time() + self._settle
        while True:
            try:
                event = await asyncio.wait_for(events.get(), max(0.0, check_at - loop.time()))
            except TimeoutError:
                event = None
            if event is not None:
                if event.kind == "lost":
                    raise WatchLostError(event.detail)
                if event.kind == "served":
                    logger.info("%s was replaced; watching it again", anchor)
                    return
                if seen is None:  # a change: settle from here (further events only wait)
                    seen = await self._read()
                    check_at = loop.time() + self._settle
                continue
            if seen is None:
                if _identity(anchor) != identity:
                    logger.info("%s is another directory now; watching it again", anchor)
                    return
                check_at = loop.time() + self._verify
                continue
            now = await self._read()
            if now != seen:  # still being written
                seen, check_at = now, loop.time() + self._settle
                continue
            # exactly what settled; a read that failed is left to the store to report
            await self._reload("watch", now.texts)
            seen, check_at = None, loop.time() + self._verify

    async def _read(self) -> _Snapshot:
        try:
            return _Snapshot(await asyncio.to_thread(read_texts, self.path))
        except ProfileError as exc:
            return _Snapshot(None, exc.issues)

    # -- status ---------------------------------------------------------------------------

    def _set(self, state: WatchState, paths: tuple[str, ...] = ()) -> None:
        if state == "watching":
            if self.status.state == "lost":
                logger.warning("watching profiles again: %s", ", ".join(paths))
            else:
                logger.info("watching %s for profile changes", ", ".join(paths))
        self.status = WatchStatus(state, paths, self._clock(), None, self.status.losses)

    def _lose(self, reason: str) -> None:
        status = self.status
        if status.state != "lost":
            logger.warning("profile watch lost: %s", reason)
            status = WatchStatus("lost", (), self._clock(), reason, status.losses + 1)
        else:
            logger.debug("profile watch still lost: %s", reason)
            status = WatchStatus("lost", (), status.since, reason, status.losses)
        self.status = status


def _relevant(single_file: str | None) -> Callable[[Change, str], bool]:
    def accept(_change: Change, changed: str) -> bool:
        name = Path(changed).name
        if single_file is None:
            return name.endswith((".yaml", ".yml")) or name.startswith("..")
        return name == single_file or name.startswith("..")

    return accept


def _is_served(anchor: Path) -> Callable[[Change, str], bool]:
    """Events in the parent that replace the served name (not its metadata changing)."""

    def accept(change: Change, changed: str) -> bool:
        return change in (Change.added, Change.deleted) and Path(changed).name == anchor.name

    return accept


def _real_directory(anchor: Path) -> Path | None:
    try:
        real = anchor.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a link loop
        return None
    return real if real.is_dir() else None


def _identity(anchor: Path) -> object:
    """What the served directory is right now (its device and inode, through links)."""
    try:
        info = os.stat(anchor)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def _raise_lost(events: asyncio.Queue[_Event]) -> None:
    """Raise for a watch that failed to set up (other events stay queued, in order)."""
    pending = []
    while not events.empty():
        event = events.get_nowait()
        if event.kind == "lost":
            raise WatchLostError(event.detail)
        pending.append(event)
    for event in pending:
        events.put_nowait(event)


class _Pumps:
    """Watches feeding one queue; every one is cancelled and awaited when the block ends."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(
        self, directory: Path, *, recursive: bool, accept: Callable[[Change, str], bool]
    ) -> None:
        kind: Literal["content", "served"] = "content" if recursive else "served"
        pump = _pump(self.events, directory, kind, recursive, accept)
        self._tasks.append(asyncio.create_task(pump, name=f"watch {directory}"))

    async def __aenter__(self) -> _Pumps:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)


async def _pump(
    events: asyncio.Queue[_Event],
    directory: Path,
    kind: Literal["content", "served"],
    recursive: bool,
    accept: Callable[[Change, str], bool],
) -> None:
    try:
        async for changes in _changes(directory, recursive, accept):
            logger.debug("profile change: %s", sorted(str(p) for _, p in changes))
            events.put_nowait(_Event(kind))
    except OSError as exc:
        events.put_nowait(_Event("lost", f"cannot watch {directory}: {_why(exc)}"))
        return
    except RuntimeError as exc:  # watchfiles' internal errors
        events.put_nowait(_Event("lost", f"watching {directory} failed: {exc}"))
        return
    events.put_nowait(_Event("lost", f"the watch of {directory} ended"))


async def _changes(
    directory: Path, recursive: bool, accept: Callable[[Change, str], bool]
) -> AsyncGenerator[set[tuple[Change, str]], None]:
    """Batches of accepted changes: an inotify watch on the event loop where there is one
    (Linux), else watchfiles (imported only then)."""
    if inotify.available():
        batches = inotify.watch(
            directory,
            recursive=recursive,
            accept=accept,
            debounce_ms=DEBOUNCE_MS,
            quiet_ms=STEP_MS,
        )
        async for batch in batches:
            yield batch
        return
    from watchfiles import awatch  # noqa: PLC0415 - elsewhere only: a thread and its wheel

    def accept_theirs(change: object, path: str) -> bool:
        return accept(Change(int(change)), path)  # type: ignore[call-overload]

    async for changes in awatch(
        directory,
        watch_filter=accept_theirs,
        debounce=DEBOUNCE_MS,
        step=STEP_MS,
        recursive=recursive,
    ):
        yield {(Change(int(change)), path) for change, path in changes}


def _why(exc: OSError) -> str:
    """An OSError's reason (watchfiles adds the Rust error and the paths to its message)."""
    if exc.errno is not None:
        return os.strerror(exc.errno)
    if isinstance(exc, FileNotFoundError):
        return "No such file or directory"
    if isinstance(exc, PermissionError):
        return "Permission denied"
    return str(exc)
