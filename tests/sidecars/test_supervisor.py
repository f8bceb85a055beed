"""Supervisor against the fake llama-server: restart policy, start limit, reset, stop_all."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from llamasup.errors import SidecarError, SidecarFailedError, SidecarStartError
from llamasup.planner.restart import RestartPolicy
from llamasup.sidecars.supervisor import SupervisedStatus, Supervisor, SupervisorEvent
from llamasup.sidecars.types import SidecarEventKind, SidecarSettings, SidecarState
from llamasup.spec.resolve import SidecarSpec
from llamasup.testing.poll import wait_for

from .sidecar_helpers import fake_spec, pid_alive

pytestmark = pytest.mark.anyio

FAST = RestartPolicy(
    backoff_initial=0.05,
    backoff_factor=2.0,
    backoff_max=1.0,
    jitter=0.0,
    start_limit=3,
    start_window=60.0,
)

MakeSupervisor = Callable[..., Supervisor]


@pytest.fixture
async def make_supervisor(
    settings: SidecarSettings, fake_binary: Path
) -> AsyncIterator[MakeSupervisor]:
    made: list[Supervisor] = []

    def make(policy: RestartPolicy = FAST, **kwargs: object) -> Supervisor:
        supervisor = Supervisor(
            settings,
            policy=policy,
            resolve_binary=lambda spec: str(fake_binary),
            **kwargs,  # type: ignore[arg-type]
        )
        made.append(supervisor)
        return supervisor

    yield make
    for supervisor in made:
        await supervisor.stop_all(timeout=5.0)


def record(supervisor: Supervisor) -> list[tuple[float, SupervisorEvent]]:
    events: list[tuple[float, SupervisorEvent]] = []
    supervisor.subscribe(lambda event: events.append((time.monotonic(), event)))
    return events


def status_of(supervisor: Supervisor, key: str) -> SupervisedStatus:
    return next(status for status in supervisor.statuses() if status.key == key)


async def test_failing_start_backs_off_then_hits_the_start_limit_and_reset_recovers(
    make_supervisor: MakeSupervisor, model_file: Path
) -> None:
    supervisor = make_supervisor(jitter=lambda: 0.5)
    events = record(supervisor)
    model_file.unlink()  # every start exits 1: "exiting due to model loading error"
    spec = fake_spec(model_file)
    sidecar = supervisor.start(spec)

    await wait_for(lambda: status_of(supervisor, spec.key).gave_up, what="start limit")
    failures = [(t, e) for t, e in events if e.kind is SidecarEventKind.START_FAILED]
    assert len(failures) == 3
    decisions = [e.decision for _, e in failures]
    assert [d.failures for d in decisions if d] == [1, 2, 3]
    assert [d.delay for d in decisions if d][:2] == [0.05, 0.1]
    assert decisions[-1] is not None and decisions[-1].give_up
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(failures)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # the backoff really was waited out

    status = status_of(supervisor, spec.key)
    assert status.sidecar.state is SidecarState.FAILED
    assert status.failures == 3 and status.retry_in is None
    assert status.sidecar.exit_code == 1
    assert any("exiting due to model loading error" in line for line in status.sidecar.log_tail)
    # no retry on its own, and an on-demand start is refused with the reason
    supervisor.start(spec)
    with pytest.raises(SidecarFailedError, match="start limit reached") as refused:
        await sidecar.ensure_ready()
    assert f"`llamasup unload {spec.model}` resets it" in str(refused.value)
    assert "exiting due to model loading error" in (sidecar.status().last_error or "")
    assert len([e for _, e in events if e.kind is SidecarEventKind.START_FAILED]) == 3

    model_file.write_bytes(b"fixed")
    await supervisor.reset(spec.key)
    await sidecar.ensure_ready()
    status = status_of(supervisor, spec.key)
    assert status.sidecar.state is SidecarState.READY
    assert not status.gave_up and status.failures == 0


async def test_crash_while_ready_is_restarted(
    make_supervisor: MakeSupervisor, model_file: Path
) -> None:
    supervisor = make_supervisor()
    events = record(supervisor)
    spec = fake_spec(model_file, {"FAKE_LLAMA_CRASH_AFTER_REQUESTS": "1"})
    sidecar = supervisor.start(spec)
    await sidecar.ensure_ready()
    first_pid = sidecar.status().pid
    assert first_pid is not None and sidecar.base_url is not None
    async with httpx.AsyncClient(base_url=sidecar.base_url) as client:
        response = await client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        )
    assert response.status_code == 200

    await wait_for(
        lambda: any(e.kind is SidecarEventKind.EXITED for _, e in events), what="exit noticed"
    )
    exited = next(e for _, e in events if e.kind is SidecarEventKind.EXITED)
    assert exited.status.exit_code == -9
    assert exited.decision is not None and not exited.decision.give_up
    await wait_for(
        lambda: sidecar.state is SidecarState.READY and sidecar.status().pid != first_pid,
        what="restarted",
    )
    assert sidecar.status().restarts == 1
    assert not pid_alive(first_pid)


async def test_unhealthy_sidecar_is_killed_and_restarted(
    make_supervisor: MakeSupervisor, model_file: Path
) -> None:
    supervisor = make_supervisor()
    events = record(supervisor)
    spec = fake_spec(model_file, {"FAKE_LLAMA_FAIL_HEALTH_AFTER": "0.1"})
    sidecar = supervisor.start(spec)
    await sidecar.ensure_ready()
    first_pid = sidecar.status().pid
    assert first_pid is not None
    # health every 0.2 s, 3 failures in a row: unhealthy within about a second
    await wait_for(
        lambda: any(e.kind is SidecarEventKind.UNHEALTHY for _, e in events), what="unhealthy"
    )
    unhealthy = next(e for _, e in events if e.kind is SidecarEventKind.UNHEALTHY)
    assert "unhealthy" in (unhealthy.status.last_error or "")
    assert not pid_alive(first_pid)
    await wait_for(lambda: sidecar.state is SidecarState.READY, what="restarted")
    assert sidecar.status().pid != first_pid


async def test_on_demand_start_during_backoff_waits_for_it(
    make_supervisor: MakeSupervisor, model_file: Path
) -> None:
    policy = RestartPolicy(backoff_initial=0.3, jitter=0.0, start_limit=5)
    supervisor = make_supervisor(policy)
    model_file.unlink()
    spec = fake_spec(model_file)
    sidecar = supervisor.start(spec)
    await wait_for(lambda: status_of(supervisor, spec.key).retry_in is not None, what="backoff")
    assert sidecar.state is SidecarState.FAILED  # waiting out the backoff shows as failed
    model_file.write_bytes(b"fixed")
    started = time.monotonic()
    await sidecar.ensure_ready()  # joins the gate: no start before the backoff is over
    assert time.monotonic() - started >= 0.2
    assert sidecar.status().restarts == 1


async def test_stop_forgets_the_key_and_refuses_stale_handles(
    make_supervisor: MakeSupervisor, model_file: Path
) -> None:
    supervisor = make_supervisor()
    events = record(supervisor)
    spec = fake_spec(model_file)
    sidecar = supervisor.start(spec)
    assert supervisor.start(spec) is sidecar  # idempotent
    await sidecar.ensure_ready()
    pid = sidecar.status().pid
    assert pid is not None
    await supervisor.stop(spec.key, reason="evicted")
    assert supervisor.get(spec.key) is None and supervisor.statuses() == []
    assert not pid_alive(pid)
    assert events[-1][1].kind is SidecarEventKind.STOPPED
    assert events[-1][1].decision is None  # a requested stop is not a failure
    with pytest.raises(SidecarError, match="removed"):
        await sidecar.ensure_ready()
    await supervisor.stop(spec.key, reason="again")  # unknown key: no-op


async def test_stop_all_is_parallel_and_bounded(
    make_supervisor: MakeSupervisor, model_file: Path
) -> None:
    supervisor = make_supervisor()
    specs = [
        fake_spec(model_file, {"FAKE_LLAMA_IGNORE_SIGTERM": "1", "N": str(n)}) for n in range(3)
    ] + [fake_spec(model_file, {"FAKE_LLAMA_LOAD_DELAY": "30"})]
    sidecars = [supervisor.start(spec) for spec in specs]
    await asyncio.gather(*(s.ensure_ready() for s in sidecars[:3]))
    await wait_for(lambda: sidecars[3].status().pid is not None, what="loading one spawned")
    pids = [s.status().pid for s in sidecars]
    started = time.monotonic()
    await supervisor.stop_all(timeout=4.0)
    elapsed = time.monotonic() - started
    # three 2 s graces in parallel (~2 s), not in series (6 s): a margin that a loaded
    # machine's slow SIGKILL and reaping does not eat
    assert elapsed < 4.0
    assert supervisor.statuses() == []
    assert not any(pid_alive(pid) for pid in pids if pid is not None)
    assert all(s.state is SidecarState.STOPPED for s in sidecars)


async def test_start_errors_reach_on_demand_callers(
    make_supervisor: MakeSupervisor, model_file: Path
) -> None:
    supervisor = make_supervisor()
    sidecar = supervisor.start(fake_spec(model_file, {"FAKE_LLAMA_CRASH_AT_START": "7"}))
    with pytest.raises(SidecarStartError) as caught:
        await sidecar.ensure_ready()
    assert caught.value.exit_code == 7


async def test_missing_binary_is_a_start_failure_under_the_policy(
    settings: SidecarSettings, model_file: Path, tmp_path: Path
) -> None:
    supervisor = Supervisor(settings, policy=FAST)  # default resolution: llamasup.runtime.locate
    try:
        spec = SidecarSpec(
            model="fake",
            kind="llama-server",
            binary=str(tmp_path / "missing" / "llama-server"),
            args=("-m", str(model_file)),
        )
        sidecar = supervisor.start(spec)  # does not raise: the failure shows in the status
        await wait_for(lambda: status_of(supervisor, spec.key).gave_up, what="start limit")
        error = sidecar.status().last_error or ""
        assert "does not exist" in error and "start limit reached" not in error
        assert supervisor.ports.held == frozenset()
    finally:
        await supervisor.stop_all(timeout=5.0)
