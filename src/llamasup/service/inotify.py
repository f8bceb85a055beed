"""A Linux inotify watch of a directory, read by the event loop itself.

The kernel queues the events on a descriptor; the loop reads it when it becomes readable, so
an idle watch costs nothing: no thread, no timer, no wake-up. (watchfiles' Rust thread wakes
every ``step`` ms to look for a stop request and for changes to hand over, and each of those
wake-ups takes the GIL: at the 20 ms step the profile watch needs for a prompt reload, two
watches woke the idle front 100 times a second.)

Changes are gathered into batches as watchfiles gathers them: a batch is handed over once
``quiet`` ms pass without a new event, at most ``debounce`` ms after its first event. A
recursive watch adds the subdirectories that appear. A queue overflow hands over the watched
directory itself, unfiltered (the caller must look at everything again). When the watched
directory itself goes away, the watch falls silent: whoever watches its parent sees that.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import os
import struct
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path


class Change(enum.IntEnum):
    """What happened to a path (the same values as ``watchfiles.Change``)."""

    added = 1
    modified = 2
    deleted = 3


Accept = Callable[[Change, str], bool]
Batch = set[tuple[Change, str]]

_MODIFY, _ATTRIB, _CLOSE_WRITE = 0x2, 0x4, 0x8
_MOVED_FROM, _MOVED_TO, _CREATE, _DELETE = 0x40, 0x80, 0x100, 0x200
_Q_OVERFLOW, _IGNORED, _ISDIR = 0x4000, 0x8000, 0x40000000
_ONLYDIR = 0x01000000
_NONBLOCK, _CLOEXEC = os.O_NONBLOCK, getattr(os, "O_CLOEXEC", 0)
_MASK = _MODIFY | _ATTRIB | _CLOSE_WRITE | _MOVED_FROM | _MOVED_TO | _CREATE | _DELETE
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def available() -> bool:
    """True where this watch works (Linux with inotify in its C library)."""
    return _LIBC is not None


def _kind(mask: int) -> Change:
    if mask & (_CREATE | _MOVED_TO):
        return Change.added
    if mask & (_DELETE | _MOVED_FROM):
        return Change.deleted
    return Change.modified


class InotifyWatch:
    """One inotify descriptor watching ``directory`` (and, if recursive, what lies below)."""

    def __init__(
        self,
        directory: Path,
        *,
        recursive: bool,
        accept: Accept,
        debounce_ms: int,
        quiet_ms: int,
    ) -> None:
        if _LIBC is None:
            raise OSError("inotify is not available here")
        self._root = directory
        self._recursive = recursive
        self._accept = accept
        self._debounce = debounce_ms / 1000
        self._quiet = quiet_ms / 1000
        self._loop = asyncio.get_running_loop()
        self._batches: asyncio.Queue[Batch] = asyncio.Queue()
        self._batch: Batch = set()
        self._first = self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._paths: dict[int, Path] = {}
        fd = _LIBC.inotify_init1(_NONBLOCK | _CLOEXEC)
        if fd < 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))
        self._fd = fd
        try:
            self._add(directory, root=True)
            self._loop.add_reader(fd, self._readable)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        if self._fd < 0:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1

    async def __aiter__(self) -> AsyncIterator[Batch]:
        while True:
            yield await self._batches.get()

    # -- watches ------------------------------------------------------------------------

    def _add(self, directory: Path, *, root: bool = False) -> None:
        assert _LIBC is not None
        wd = _LIBC.inotify_add_watch(self._fd, os.fsencode(directory), _MASK | _ONLYDIR)
        if wd < 0:
            number = ctypes.get_errno()
            if root:
                raise OSError(number, os.strerror(number), str(directory))
            return  # a subdirectory gone again already: nothing to watch there
        self._paths[wd] = directory
        if self._recursive:
            with contextlib.suppress(OSError):
                for entry in os.scandir(directory):
                    if entry.is_dir(follow_symlinks=False):
                        self._add(Path(entry.path))

    # -- events -------------------------------------------------------------------------

    def _readable(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & _Q_OVERFLOW:
                self._note(Change.modified, str(self._root), filtered=False)
                continue
            if mask & _IGNORED:
                self._paths.pop(wd, None)  # removed, or the directory is gone
                continue
            directory = self._paths.get(wd)
            if directory is None or not raw:
                continue
            path = directory / os.fsdecode(raw)
            if self._recursive and mask & _ISDIR and mask & (_CREATE | _MOVED_TO):
                self._add(path)
            self._note(_kind(mask), str(path))

    def _note(self, change: Change, path: str, *, filtered: bool = True) -> None:
        if filtered and not self._accept(change, path):
            return
        now = self._loop.time()
        if not self._batch:
            self._first = now
        self._batch.add((change, path))
        self._last = now
        if self._timer is None:
            self._timer = self._loop.call_at(now + self._quiet, self._due)

    def _due(self) -> None:
        self._timer = None
        now = self._loop.time()
        ends = min(self._last + self._quiet, self._first + self._debounce)
        if now < ends:  # events kept coming: wait for a quiet moment (or the bound)
            self._timer = self._loop.call_at(ends, self._due)
            return
        batch, self._batch = self._batch, set()
        self._batches.put_nowait(batch)


async def watch(
    directory: Path, *, recursive: bool, accept: Accept, debounce_ms: int, quiet_ms: int
) -> AsyncGenerator[Batch, None]:
    """Batches of accepted changes under ``directory`` until the caller stops iterating.
    Raises OSError if ``directory`` cannot be watched."""
    watcher = InotifyWatch(
        directory, recursive=recursive, accept=accept, debounce_ms=debounce_ms, quiet_ms=quiet_ms
    )
    try:
        async for batch in watcher:
            yield batch
    finally:
        watcher.close()
