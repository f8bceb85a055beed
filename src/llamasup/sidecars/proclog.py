"""``ProcessLog``: what a sidecar's process printed, kept bounded in memory and on disk.

The sidecar's pipe readers feed raw chunks in; this module splits them into lines, keeps a
ring of recent lines (for status and error reports), appends them to a size-rotated log file,
and fans new lines out to followers (``GET /api/logs/{key}?follow=1``). Every buffer is
bounded: a chatty child costs CPU, never unbounded memory or disk, and never blocks on a
full pipe because the readers never wait on anyone downstream.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Literal, NamedTuple

Stream = Literal["stdout", "stderr", "llamasup"]


class LogLine(NamedTuple):
    """One line of output; ``time`` is wall-clock seconds, ``stream`` where it came from."""

    time: float
    stream: Stream
    text: str


class LogFollower:
    """An async iterator of new lines; ends when the log is closed.

    A follower that falls behind by more than its capacity loses the oldest lines and gets a
    ``llamasup`` line saying how many were dropped, instead of slowing the child down.
    """

    def __init__(self, log: ProcessLog, backlog: list[LogLine], capacity: int) -> None:
        self._log = log
        self._queue: deque[LogLine] = deque(backlog, maxlen=capacity)
        self._capacity = capacity
        self._dropped = 0
        self._wakeup = asyncio.Event()
        self._closed = False

    def _push(self, line: LogLine) -> None:
        if len(self._queue) == self._capacity:
            self._dropped += 1
        self._queue.append(line)
        self._wakeup.set()

    def _end(self) -> None:
        self._closed = True
        self._wakeup.set()

    def __aiter__(self) -> LogFollower:
        return self

    async def __anext__(self) -> LogLine:
        while True:
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                text = f"[llamasup] {dropped} lines dropped: reader too slow"
                return LogLine(time.time(), "llamasup", text)
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    async def aclose(self) -> None:
        self._log._followers.discard(self)
        self._end()


class ProcessLog:
    """Recent output of one sidecar (across its restarts) plus its rotating log file."""

    def __init__(
        self,
        path: Path | None,
        *,
        ring_lines: int = 1000,
        max_file_bytes: int = 4 * 1024 * 1024,
        backups: int = 1,
        max_line_bytes: int = 8192,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._ring: deque[LogLine] = deque(maxlen=ring_lines)
        self._max_file_bytes = max_file_bytes
        self._backups = backups
        self._max_line_bytes = max_line_bytes
        self._monotonic = monotonic
        self._partial: dict[Stream, bytearray] = {}
        self._followers: set[LogFollower] = set()
        self._file: IO[bytes] | None = None
        self._file_size = 0
        self._closed = False
        #: monotonic time of the last output byte: the sidecar's measure of load progress
        self.last_output = monotonic()
        self.total_lines = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._open_file()

    # -- input -------------------------------------------------------------------------------

    def feed(self, stream: Stream, data: bytes) -> list[LogLine]:
        """Take a raw chunk from a pipe; return the complete lines it finished."""
        self.last_output = self._monotonic()
        buffer = self._partial.setdefault(stream, bytearray())
        buffer += data
        cut = buffer.rfind(b"\n")
        raw: list[bytes] = []
        if cut >= 0:
            raw = bytes(buffer[:cut]).split(b"\n")
            del buffer[: cut + 1]
        # a line without an end (progress dots, a binary blob) is cut, never buffered forever
        while len(buffer) >= self._max_line_bytes:
            raw.append(bytes(buffer[: self._max_line_bytes]))
            del buffer[: self._max_line_bytes]
        return self._add(stream, raw)

    def flush(self, stream: Stream) -> list[LogLine]:
        """The pipe closed: whatever is left is the last line."""
        buffer = self._partial.pop(stream, None)
        if not buffer:
            return []
        return self._add(stream, [bytes(buffer)])

    def take_partial(self, stream: Stream) -> bytes:
        """The line begun on ``stream`` and not yet ended, taken out of the buffer (a
        hand-over gives it to the next llamasup, which reads the rest of it)."""
        return bytes(self._partial.pop(stream, b""))

    def recall(self, max_bytes: int = 256 * 1024) -> int:
        """Fill the ring from the end of the log file (a llamasup that adopted this sidecar
        shows what it printed before); returns the number of lines recalled."""
        if self.path is None or self._ring:
            return 0
        try:
            with self.path.open("rb") as file:
                size = file.seek(0, 2)
                file.seek(max(0, size - max_bytes))
                data = file.read()
        except OSError:
            return 0
        raw = data.split(b"\n")
        if len(data) >= max_bytes:
            raw = raw[1:]  # the first piece is the end of a cut line
        now = time.time()
        for item in raw[-(self._ring.maxlen or len(raw)) :]:
            text = item.decode("utf-8", "replace").rstrip("\r")
            if text:
                stream: Stream = "llamasup" if text.startswith("[llamasup]") else "stderr"
                self._ring.append(LogLine(now, stream, text))
        return len(self._ring)

    def note(self, text: str) -> LogLine:
        """A line from llamasup itself (spawn, signals, exit), kept in order with the output."""
        return self._add("llamasup", [f"[llamasup] {text}".encode()])[0]

    def _add(self, stream: Stream, raw: list[bytes]) -> list[LogLine]:
        if not raw:
            return []
        now = time.time()
        lines = [LogLine(now, stream, item.decode("utf-8", "replace").rstrip("\r")) for item in raw]
        self._ring.extend(lines)
        self.total_lines += len(lines)
        self._write(b"\n".join(raw) + b"\n")
        for follower in self._followers:
            for line in lines:
                follower._push(line)
        return lines

    # -- file --------------------------------------------------------------------------------

    def _open_file(self) -> None:
        assert self.path is not None
        self._file = self.path.open("ab")
        self._file_size = self._file.tell()

    def _write(self, data: bytes) -> None:
        if self._file is None:
            return
        if self._file_size + len(data) > self._max_file_bytes and self._file_size > 0:
            self._rotate()
        # a single chunk larger than the limit is cut to the limit, keeping its end
        data = data[-self._max_file_bytes :]
        try:
            self._file.write(data)
            self._file.flush()
        except OSError as exc:
            # a full disk must not take the sidecar down: keep the ring, drop the file
            self._file.close()
            self._file = None
            self._ring.append(LogLine(time.time(), "llamasup", f"[llamasup] log file off: {exc}"))
            return
        self._file_size += len(data)

    def _rotate(self) -> None:
        assert self.path is not None and self._file is not None
        self._file.close()
        if self._backups <= 0:
            self.path.unlink(missing_ok=True)
        else:
            for index in range(self._backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._open_file()

    # -- output ------------------------------------------------------------------------------

    def recent(self, limit: int | None = None) -> list[LogLine]:
        lines = list(self._ring)
        return lines if limit is None else lines[-limit:] if limit > 0 else []

    def last_child_line(self) -> str | None:
        """The last line the process itself printed (its dying words, usually)."""
        for line in reversed(self._ring):
            if line.stream != "llamasup" and line.text.strip():
                return line.text
        return None

    def tail(self, limit: int) -> tuple[str, ...]:
        return tuple(line.text for line in self.recent(limit))

    def follow(self, *, backlog: int = 0, capacity: int = 10_000) -> LogFollower:
        """New lines from now on (after up to ``backlog`` recent ones); ``aclose()`` when done."""
        follower = LogFollower(self, self.recent(backlog), max(capacity, 1))
        if self._closed:
            follower._end()
        else:
            self._followers.add(follower)
        return follower

    def close(self) -> None:
        """No more output will come: end followers and close the file."""
        self._closed = True
        for follower in list(self._followers):
            follower._end()
        self._followers.clear()
        if self._file is not None:
            self._file.close()
            self._file = None
