"""Adopting a sidecar process handed over by the previous llamasup image (a planned restart).

The process is started here the way the previous image leaves it (its own session, output in
pipes whose read ends this process holds, reaped by nobody yet), then inspected and adopted
or dismissed. Nothing here re-executes the test process: the serve tests do that.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llamasup.sidecars.handover import ProcessHandle, Verdict, inspect
from llamasup.sidecars.health import http_status
from llamasup.sidecars.procfs import start_time, stat
from llamasup.sidecars.supervisor import Supervisor, SupervisorEvent
from llamasup.sidecars.types import SidecarEventKind, SidecarSettings, SidecarState
from llamasup.testing.poll import wait_for

from .sidecar_helpers import Detached, fake_spec, pid_alive

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and pidfds: Linux"),
]

KEY = "handed-over-key"


@pytest.fixture
def detached(fake_binary: Path, model_file: Path, settings: SidecarSettings) -> Iterator[Detached]:
    process = Detached(fake_binary, model_file, settings.port_range[0], key=KEY)
    yield process
    process.kill()


async def ready(process: Detached) -> ProcessHandle:
    async def healthy() -> bool:
        return await http_status("127.0.0.1", process.port, "/health", limit=1.0) == 200

    await wait_for(healthy, what="the detached fake to be ready")
    started = start_time(process.pid)
    assert started is not None
    now = time.time()
    return ProcessHandle(
        pid=process.pid,
        start_time=started,
        port=process.port,
        pipes=process.handle_pipes(),
        partial={2: b"half a li"},
        auth_key=process.key,
        started_at=now - 60,
        ready_at=now - 59,
        restarts=2,
    )


async def test_a_healthy_child_with_its_key_is_adopted_and_keeps_serving_and_logging(
    detached: Detached, settings: SidecarSettings, model_file: Path, fake_binary: Path
) -> None:
    handle = await ready(detached)
    assert await inspect(handle, host="127.0.0.1", health_path="/health") == (
        Verdict.ADOPT,
        "healthy",
    )
    supervisor = Supervisor(settings, resolve_binary=lambda spec: str(fake_binary))
    events: list[SupervisorEvent] = []
    supervisor.subscribe(events.append)
    spec = fake_spec(model_file)
    sidecar = await supervisor.adopt(spec, handle, adopted_from=4242)

    status = sidecar.status()
    assert (status.state, status.pid, status.port) == (
        SidecarState.READY,
        detached.pid,
        detached.port,
    )
    assert (status.adopted_from, status.restarts) == (4242, 2)
    assert status.adopted_at is not None and status.started_at == handle.started_at
    assert [event.kind for event in events] == [SidecarEventKind.ADOPTED]
    assert detached.port in supervisor.ports.held
    headers = {k.decode(): v.decode() for k, v in sidecar.auth_headers}
    assert headers == {"authorization": f"Bearer {KEY}"}

    # the inherited pipe is read again: a request's log line reaches the sidecar's log,
    # after the half line the previous image had read, completed by what came next
    async with httpx.AsyncClient(base_url=sidecar.base_url or "", trust_env=False) as client:
        reply = await client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}]},
            headers=headers,
        )
    assert reply.status_code == 200
    await wait_for(
        lambda: any("processing task" in line.text for line in sidecar.recent_logs()),
        what="the adopted process's output in its log",
    )
    assert any(line.text.startswith("half a li") for line in sidecar.recent_logs())

    # stopped like any sidecar: SIGTERM to its group, reaped by the adopter
    await supervisor.stop(spec.key, reason="test")
    assert not pid_alive(detached.pid)
    with pytest.raises(ChildProcessError):
        os.waitpid(detached.pid, os.WNOHANG)  # reaped already: no zombie left
    assert sidecar.status().exit_code == 0
    assert detached.port not in supervisor.ports.held


async def test_an_adopted_process_that_dies_is_noticed_and_restarted(
    detached: Detached, settings: SidecarSettings, model_file: Path, fake_binary: Path
) -> None:
    handle = await ready(detached)
    supervisor = Supervisor(settings, resolve_binary=lambda spec: str(fake_binary))
    spec = fake_spec(model_file)
    sidecar = await supervisor.adopt(spec, handle, adopted_from=os.getpid())
    os.kill(detached.pid, signal.SIGKILL)
    await wait_for(lambda: sidecar.status().exit_code == -signal.SIGKILL, what="the exit")
    # the restart policy applies as to any crash: a new process, no longer adopted
    await wait_for(
        lambda: sidecar.state is SidecarState.READY and sidecar.status().pid != detached.pid,
        timeout=20,
        what="a new process",
    )
    assert sidecar.status().adopted_at is None
    await supervisor.stop_all(5.0)


async def test_a_wrong_key_or_no_answer_is_unhealthy_and_dismissed(
    detached: Detached, settings: SidecarSettings, fake_binary: Path
) -> None:
    handle = await ready(detached)
    wrong = ProcessHandle(
        pid=handle.pid, start_time=handle.start_time, port=handle.port, auth_key="not-it"
    )
    verdict, reason = await inspect(wrong, host="127.0.0.1", health_path="/health")
    assert verdict is Verdict.UNHEALTHY and "refused its key" in reason
    elsewhere = ProcessHandle(pid=handle.pid, start_time=handle.start_time, port=1)
    verdict, _ = await inspect(elsewhere, host="127.0.0.1", health_path="/health", limit=0.5)
    assert verdict is Verdict.UNHEALTHY

    supervisor = Supervisor(settings, resolve_binary=lambda spec: str(fake_binary))
    await supervisor.dismiss("somekey", handle, reason="not fit")
    assert not pid_alive(detached.pid)
    with pytest.raises(ChildProcessError):
        os.waitpid(detached.pid, os.WNOHANG)
    log = (settings.log_dir / "somekey.log").read_text()
    assert "not adopted after a restart: not fit; stopping pid" in log


async def test_gone_and_reused_pids_are_never_adopted_or_touched(tmp_path: Path) -> None:
    # a pid that no longer exists
    done = subprocess.Popen(["true"])
    done.wait()
    gone = ProcessHandle(pid=done.pid, start_time="1", port=1)
    assert (await inspect(gone, host="127.0.0.1", health_path="/health"))[0] is Verdict.GONE

    # a pid now used by an unrelated process (another start time)
    with subprocess.Popen(["sleep", "30"]) as unrelated:
        started = start_time(unrelated.pid)
        assert started is not None
        reused = ProcessHandle(pid=unrelated.pid, start_time=str(int(started) - 1), port=1)
        verdict, reason = await inspect(reused, host="127.0.0.1", health_path="/health")
        assert verdict is Verdict.FOREIGN and "another process" in reason
        assert unrelated.poll() is None
        unrelated.kill()

    # the same process, but not our child: its llamasup is gone, it is not adopted
    parent = os.getppid()
    parent_start = start_time(parent)
    assert parent_start is not None
    theirs = ProcessHandle(pid=parent, start_time=parent_start, port=1)
    verdict, _ = await inspect(theirs, host="127.0.0.1", health_path="/health")
    assert verdict is Verdict.ORPHANED


async def test_one_that_died_during_the_restart_is_reaped_not_adopted(
    detached: Detached,
) -> None:
    handle = await ready(detached)
    handle.close_pipes()
    os.kill(detached.pid, signal.SIGKILL)
    await wait_for(
        lambda: (found := stat(detached.pid)) is not None and found.exited, what="a zombie"
    )
    verdict, reason = await inspect(handle, host="127.0.0.1", health_path="/health")
    assert verdict is Verdict.GONE and f"exited with code {-signal.SIGKILL}" in reason
    with pytest.raises(ChildProcessError):
        os.waitpid(detached.pid, os.WNOHANG)  # reaped: no zombie left behind
