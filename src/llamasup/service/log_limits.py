"""Log lines that repeat under load, cut to one per interval with a count.

When the process runs out of file descriptors, asyncio logs a traceback for every failed
``accept()`` (many per second, 131 MB within seconds were seen), and uvicorn logs one per
failing request: the log fills the disk and hides everything else. :class:`RepeatFilter`
lets the first of a kind through, drops the same kind for ``interval`` seconds, and lets
the next one through with ``[repeated N times in the last S s]`` (and no traceback: the
first one had it).

A kind is the logger, the level, the first line of the message template and the exception
type, so one bug's tracebacks are counted together and a different one still shows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

#: loggers that repeat themselves when the front is flooded
NOISY_LOGGERS = ("asyncio", "uvicorn.error", "llamasup.service.front_protocol")
INTERVAL = 10.0
#: kinds remembered at once (the oldest is forgotten first)
_MAX_KINDS = 512

_Kind = tuple[str, int, str, str]


class RepeatFilter(logging.Filter):
    def __init__(
        self, interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        #: kind -> (when its window began, records dropped in it)
        self._windows: dict[_Kind, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = _kind(record)
        now = self._clock()
        with self._lock:
            window = self._windows.get(kind)
            if window is not None and now - window[0] < self.interval:
                self._windows[kind] = (window[0], window[1] + 1)
                return False
            self._windows.pop(kind, None)
            self._windows[kind] = (now, 0)
            if len(self._windows) > _MAX_KINDS:
                del self._windows[next(iter(self._windows))]
        if window is not None and window[1]:
            record.msg = (
                f"{record.getMessage()} [repeated {window[1]} times in the last "
                f"{now - window[0]:.0f} s]"
            )
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return True


def limit_repeats(names: Iterable[str] = NOISY_LOGGERS, interval: float = INTERVAL) -> None:
    """Install one :class:`RepeatFilter` on each named logger (once per logger)."""
    for name in names:
        target = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in target.filters):
            target.addFilter(RepeatFilter(interval))


def _kind(record: logging.LogRecord) -> _Kind:
    template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
    error = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
    return (record.name, record.levelno, template.partition("\n")[0], error)
