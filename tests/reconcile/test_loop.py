"""The reconcile loop: coalescing, and a pass that raises is retried with backoff."""

from __future__ import annotations

import asyncio

import pytest

from llamasup.planner.types import Plan, Usage
from llamasup.reconcile.loop import ReconcileLoop

pytestmark = pytest.mark.anyio

_EMPTY = Plan(actions=(), usage=Usage(0, 0))


async def test_a_pass_that_raises_is_recorded_and_retried_until_it_succeeds() -> None:
    failures = 3
    calls = 0

    def decide() -> Plan:
        nonlocal calls
        calls += 1
        if calls <= failures:
            raise RuntimeError(f"flaky {calls}")
        return _EMPTY

    async def act(plan: Plan) -> None:
        return None

    loop = ReconcileLoop(decide, act, lambda: 0.0, retry_first=0.001, retry_max=0.004)
    runner = asyncio.create_task(loop.run())
    loop.trigger()  # one trigger only: the retries come from the loop itself
    try:
        async with asyncio.timeout(5):
            while loop.history.passes < failures + 1:
                await asyncio.sleep(0.001)
    finally:
        runner.cancel()
    errors = [r.error for r in loop.history.recent]
    assert errors == ["RuntimeError: flaky 1", "RuntimeError: flaky 2", "RuntimeError: flaky 3"]
    assert loop.history.last is not None and loop.history.last.error is None


async def test_an_execution_error_keeps_the_plan_in_the_record() -> None:
    async def act(plan: Plan) -> None:
        raise OSError("no such process")

    loop = ReconcileLoop(lambda: _EMPTY, act, lambda: 0.0, retry_first=60)
    decided = await loop.once()
    assert decided is _EMPTY
    last = loop.history.last
    assert last is not None and last.error == "OSError: no such process"
    assert last.plan is _EMPTY


async def test_triggers_during_a_pass_cause_exactly_one_more() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()
    passes = 0

    async def act(plan: Plan) -> None:
        nonlocal passes
        passes += 1
        if passes == 1:
            entered.set()
            await release.wait()

    loop = ReconcileLoop(lambda: _EMPTY, act, lambda: 0.0)
    runner = asyncio.create_task(loop.run())
    loop.trigger()
    await entered.wait()
    for _ in range(5):
        loop.trigger()
    release.set()
    try:
        async with asyncio.timeout(5):
            while loop.history.passes < 2:
                await asyncio.sleep(0)
        # the loop is idle again: no third pass comes without a trigger
        for _ in range(20):
            await asyncio.sleep(0)
    finally:
        runner.cancel()
    assert passes == 2
