"""The executor against a recording fake of its effects: order, drains, refusals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from llamasup.planner.types import Plan, Refuse, Start, Stop, StopReason, Usage, Wait
from llamasup.reconcile.executor import Executor

pytestmark = pytest.mark.anyio


@dataclass
class RecordingEffects:
    """Sidecars by key -> model; every call is appended to ``calls`` in order."""

    running: dict[str, str] = field(default_factory=dict)
    busy: dict[str, int] = field(default_factory=dict)
    grace: float = 5.0
    calls: list[tuple[str, ...]] = field(default_factory=list)
    stop_gate: asyncio.Event | None = None

    def running_model(self, key: str) -> str | None:
        return self.running.get(key)

    def in_flight(self, key: str) -> int:
        return self.busy.get(key, 0)

    def stop_grace(self) -> float:
        return self.grace

    def start(self, key: str, detail: str) -> None:
        self.calls.append(("start", key))

    async def stop(self, key: str, model: str, reason: StopReason, grace: float) -> None:
        self.calls.append(("stop", key, reason))
        if self.stop_gate is not None:
            await self.stop_gate.wait()
        self.running.pop(key, None)

    def stop_begins(self, stop: Stop, model: str) -> None:
        self.calls.append(("begins", stop.key, model))

    def stop_ends(self, stop: Stop, model: str) -> None:
        self.calls.append(("ends", stop.key))

    def forget(self, key: str) -> None:
        self.calls.append(("forget", key))

    def waits(self, key: str, reason: str) -> None:
        self.calls.append(("waits", key, reason))

    def refused(self, key: str, reason: str) -> None:
        self.calls.append(("refused", key, reason))

    def changed(self) -> None:
        self.calls.append(("changed",))


def _plan(*actions: Stop | Start | Wait | Refuse) -> Plan:
    return Plan(actions=actions, usage=Usage(0, 0))


async def test_idle_stops_finish_before_any_start() -> None:
    effects = RecordingEffects(running={"a": "alpha"})
    executor = Executor(effects)
    await executor.execute(
        _plan(
            Stop("a", "evicted-lru", False, 0, "alpha: evicted"),
            Start("b", "demand", "beta"),
            Wait("c", "gamma: busy"),
            Refuse("d", "delta: too big"),
        )
    )
    assert effects.calls == [
        ("begins", "a", "alpha"),
        ("stop", "a", "evicted-lru"),
        ("ends", "a"),
        ("changed",),
        ("start", "b"),
        ("waits", "c", "gamma: busy"),
        ("refused", "d", "delta: too big"),
    ]
    assert not executor.closing("a")


async def test_a_stop_of_a_record_without_a_process_forgets_it() -> None:
    effects = RecordingEffects()
    await Executor(effects).execute(_plan(Stop("gone", "removed", True, 0, "gone")))
    assert effects.calls == [("forget", "gone")]


async def test_a_busy_stop_drains_in_the_background_until_its_last_request_ends() -> None:
    effects = RecordingEffects(running={"a": "alpha"}, busy={"a": 2})
    executor = Executor(effects)
    await executor.execute(
        _plan(Stop("a", "changed", True, 2, "alpha: changed"), Start("b", "demand", "beta"))
    )
    # the start did not wait for the drain, and the drain has not stopped anything yet
    assert ("start", "b") in effects.calls
    assert ("stop", "a", "changed") not in effects.calls
    assert executor.closing("a")
    assert executor.closing_models() == {"a": "alpha"}
    effects.busy["a"] = 0
    executor.idle("a")
    async with asyncio.timeout(5):
        while executor.closing("a"):
            await asyncio.sleep(0)
    assert effects.calls[-3:] == [("stop", "a", "changed"), ("ends", "a"), ("changed",)]


async def test_a_drain_is_bounded_by_the_stop_grace() -> None:
    effects = RecordingEffects(running={"a": "alpha"}, busy={"a": 1}, grace=0.01)
    executor = Executor(effects)
    await executor.execute(_plan(Stop("a", "removed", True, 1, "alpha: removed")))
    async with asyncio.timeout(5):
        while executor.closing("a"):
            await asyncio.sleep(0.005)
    assert ("stop", "a", "removed") in effects.calls


async def test_stop_now_awaits_a_stop_under_way_and_reports_nothing_to_stop() -> None:
    gate = asyncio.Event()
    effects = RecordingEffects(running={"a": "alpha"}, stop_gate=gate)
    executor = Executor(effects)
    assert await executor.stop_now("missing", "unloaded", "x") is False
    first = asyncio.create_task(executor.stop_now("a", "unloaded", "by hand"))
    second = asyncio.create_task(executor.stop_now("a", "unloaded", "again"))
    async with asyncio.timeout(5):
        while ("stop", "a", "unloaded") not in effects.calls:
            await asyncio.sleep(0)
    assert not first.done() and not second.done()
    gate.set()
    assert await first is True
    assert await second is True
    assert effects.calls.count(("stop", "a", "unloaded")) == 1
