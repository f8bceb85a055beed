"""Repeated log lines are cut to one per interval with a count; different ones still show."""

from __future__ import annotations

import logging
import sys

from llamasup.service.log_limits import RepeatFilter, limit_repeats


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, error: type[BaseException] | None = None) -> logging.LogRecord:
    exc_info = None
    if error is not None:
        try:
            raise error("boom")
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_first_passes_then_one_summary_per_interval() -> None:
    clock = Clock()
    repeats = RepeatFilter(interval=10.0, clock=clock)
    accept = "socket.accept() out of system resource\nsocket: <fd=6>"
    assert repeats.filter(record(accept, error=OSError))
    for _ in range(1000):
        clock.now += 0.001
        assert not repeats.filter(record(accept, error=OSError))
    # a different message, or the same one with another error, is news
    assert repeats.filter(record("Task was destroyed but it is pending!"))
    assert repeats.filter(record(accept, error=ValueError))
    clock.now += 10.0
    summary = record(accept, error=OSError)
    assert repeats.filter(summary)
    assert summary.getMessage().startswith("socket.accept() out of system resource")
    assert "[repeated 1000 times in the last 11 s]" in summary.getMessage()
    assert summary.exc_info is None  # the first one carried the traceback
    # a new window: quiet again, and nothing to report when nothing was dropped
    assert not repeats.filter(record(accept, error=OSError))
    clock.now += 20.0
    alone = record("refusing client connections: %d open", 65)
    assert repeats.filter(alone)
    assert alone.getMessage() == "refusing client connections: 65 open"


def test_the_template_is_the_kind_not_the_arguments() -> None:
    repeats = RepeatFilter(interval=10.0, clock=Clock())
    assert repeats.filter(record("refusing client connections: %d open", 65))
    assert not repeats.filter(record("refusing client connections: %d open", 66))


def test_installed_once_per_logger() -> None:
    name = "llamasup.tests.noisy"
    limit_repeats([name])
    limit_repeats([name])
    noisy = logging.getLogger(name)
    try:
        assert sum(isinstance(f, RepeatFilter) for f in noisy.filters) == 1
    finally:
        for each in list(noisy.filters):
            noisy.removeFilter(each)
