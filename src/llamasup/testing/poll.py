"""Waiting for a condition in tests: poll it with a deadline, never sleep a fixed time and hope.

One helper for threads and plain code (:func:`poll_until`) and one for coroutines
(:func:`wait_for`). Both return the first truthy value the predicate gives, so a probe can
hand back what it found (a response, a matching row) as well as say that it is there, and
both fail with :class:`PollTimeout`, which names what was awaited and for how long.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")

#: generous: a deadline is only reached when something is wrong, and a loaded CI host is slow
DEFAULT_TIMEOUT = 15.0
DEFAULT_INTERVAL = 0.01


class PollTimeout(AssertionError, TimeoutError):
    """A condition a test waited for did not come in time.

    An AssertionError (a test failure, not an error in the test) and a TimeoutError (what a
    caller that expects to time out may catch).
    """


def _describe(predicate: Callable[..., object]) -> str:
    """Where a predicate was written, for a failure that names no ``what``."""
    code = getattr(predicate, "__code__", None)
    name = getattr(predicate, "__qualname__", repr(predicate))
    if code is None:
        return name
    return f"{name} ({code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})"


def _timed_out(predicate: Callable[..., object], timeout: float, what: str | None) -> PollTimeout:
    return PollTimeout(f"timed out after {timeout:g} s waiting for {what or _describe(predicate)}")


def poll_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    what: str | None = None,
) -> T:
    """Call ``predicate`` every ``interval`` s until it returns something truthy; return that.

    Raises :class:`PollTimeout` after ``timeout`` s (the predicate is always tried once more at
    the deadline, so a slow host that wakes late still sees a condition that came in time).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise _timed_out(predicate, timeout, what)
        time.sleep(interval)


@overload
async def wait_for(
    predicate: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = ...,  # noqa: ASYNC109 - one signature for both helpers
    interval: float = ...,
    what: str | None = ...,
) -> T: ...


@overload
async def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float = ...,  # noqa: ASYNC109 - one signature for both helpers
    interval: float = ...,
    what: str | None = ...,
) -> T: ...


async def wait_for(
    predicate: Callable[[], object],
    *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - one signature for both helpers
    interval: float = DEFAULT_INTERVAL,
    what: str | None = None,
) -> object:
    """:func:`poll_until` for coroutines: the event loop runs between tries.

    ``predicate`` may be a plain function or a coroutine function (a probe that makes a
    request, say).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() >= deadline:
            raise _timed_out(predicate, timeout, what)
        await asyncio.sleep(interval)
