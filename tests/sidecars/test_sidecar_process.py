"""Sidecar against the fake llama-server: start, fail, time out, stop, ports, logs, env."""

from __future__ import annotations

import asyncio
import json
import os
import select
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from llamasup.errors import SidecarError, SidecarStartError, SidecarTimeoutError
from llamasup.sidecars.health import http_status
from llamasup.sidecars.ports import PortAllocator
from llamasup.sidecars.sidecar import Sidecar
from llamasup.sidecars.types import SidecarEventKind, SidecarSettings, SidecarState
from llamasup.testing.poll import wait_for

from .sidecar_helpers import pid_alive, squat

pytestmark = pytest.mark.anyio

MakeSidecar = Callable[..., Sidecar]


async def test_start_ready_and_stop(make_sidecar: MakeSidecar) -> None:
    sidecar = make_sidecar()
    assert sidecar.state is SidecarState.STOPPED
    await sidecar.ensure_ready()
    status = sidecar.status()
    assert status.state is SidecarState.READY
    assert status.pid is not None and pid_alive(status.pid)
    assert status.port is not None
    assert status.ready_at is not None and status.started_at is not None
    assert status.ready_at >= status.started_at
    assert sidecar.base_url == f"http://127.0.0.1:{status.port}"
    assert await http_status("127.0.0.1", status.port, "/health", limit=1.0) == 200

    await sidecar.stop()
    stopped = sidecar.status()
    assert stopped.state is SidecarState.STOPPED
    # 0 normally; -15 if SIGTERM beat the handler, installed just after /health turns 200
    # (the fake mirrors the real server's order: is_ready, "model loaded", then sigaction)
    assert stopped.pid is None and stopped.exit_code in (0, -15)
    assert not pid_alive(status.pid)
    await sidecar.stop()  # idempotent
    assert sidecar.state is SidecarState.STOPPED


async def test_early_exit_reports_exit_code_and_log_tail(make_sidecar: MakeSidecar) -> None:
    sidecar = make_sidecar({"FAKE_LLAMA_CRASH_AT_START": "3"})
    started = time.monotonic()
    with pytest.raises(SidecarStartError) as caught:
        await sidecar.ensure_ready()
    assert time.monotonic() - started < 5.0
    assert caught.value.exit_code == 3
    assert any("fake crash at start" in line for line in caught.value.log_tail)
    assert "fake crash at start" in str(caught.value)
    status = sidecar.status()
    assert status.state is SidecarState.FAILED
    assert status.exit_code == 3 and status.pid is None
    assert status.last_error is not None and "code 3" in status.last_error


async def test_missing_model_exits_1_with_the_servers_reason(
    make_sidecar: MakeSidecar, model_file: Path
) -> None:
    model_file.unlink()
    sidecar = make_sidecar()
    with pytest.raises(SidecarStartError) as caught:
        await sidecar.ensure_ready()
    assert caught.value.exit_code == 1
    assert "exiting due to model loading error" in caught.value.log_tail[-3:][0] + "".join(
        caught.value.log_tail
    )


async def test_missing_binary_is_a_start_error(make_sidecar: MakeSidecar, tmp_path: Path) -> None:
    sidecar = make_sidecar()
    sidecar.binary_path = str(tmp_path / "no-such-llama-server")
    with pytest.raises(SidecarStartError, match="cannot execute"):
        await sidecar.ensure_ready()
    assert sidecar.status().state is SidecarState.FAILED
    assert sidecar.status().port is None  # the port went back to the pool


async def test_hung_load_times_out_and_is_killed(make_sidecar: MakeSidecar) -> None:
    sidecar = make_sidecar({"FAKE_LLAMA_HANG_LOAD": "1"}, load_timeout=0.4)
    pids: list[int] = []

    async def watch_pid() -> None:
        await wait_for(lambda: sidecar.status().pid is not None, what="spawn")
        pids.append(sidecar.status().pid or 0)

    watcher = asyncio.create_task(watch_pid())
    started = time.monotonic()
    with pytest.raises(SidecarTimeoutError, match="no progress"):
        await sidecar.ensure_ready()
    elapsed = time.monotonic() - started
    await watcher
    assert 0.4 <= elapsed < 5.0
    assert sidecar.status().state is SidecarState.FAILED
    await wait_for(lambda: not pid_alive(pids[0]), what="hung child gone")


async def test_slow_load_with_progress_is_not_killed(make_sidecar: MakeSidecar) -> None:
    env = {"FAKE_LLAMA_LOAD_DELAY": "1.5", "FAKE_LLAMA_PROGRESS_INTERVAL": "0.1"}
    sidecar = make_sidecar(env, load_timeout=0.5)
    started = time.monotonic()
    await sidecar.ensure_ready()
    assert time.monotonic() - started >= 1.5  # three load timeouts long, yet it made it
    assert sidecar.state is SidecarState.READY
    assert any("fake progress" in line.text for line in sidecar.recent_logs())
    await sidecar.stop()


async def test_sigterm_ignoring_child_is_killed_after_grace(make_sidecar: MakeSidecar) -> None:
    sidecar = make_sidecar({"FAKE_LLAMA_IGNORE_SIGTERM": "1"}, stop_grace=0.3)
    await sidecar.ensure_ready()
    pid = sidecar.status().pid
    assert pid is not None
    started = time.monotonic()
    await sidecar.stop()
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 3.0
    assert sidecar.status().exit_code == -9
    assert not pid_alive(pid)
    assert any("SIGKILL" in line.text for line in sidecar.recent_logs())


async def test_concurrent_callers_share_one_start(
    make_sidecar: MakeSidecar, tmp_path: Path
) -> None:
    argv_log = tmp_path / "argv.jsonl"
    sidecar = make_sidecar({"FAKE_LLAMA_ARGV_LOG": str(argv_log), "FAKE_LLAMA_LOAD_DELAY": "0.2"})
    await asyncio.gather(*(sidecar.ensure_ready() for _ in range(8)))
    records = [json.loads(line) for line in argv_log.read_text().splitlines()]
    assert len(records) == 1
    assert records[0]["pid"] == sidecar.status().pid
    await asyncio.gather(*(sidecar.ensure_ready() for _ in range(4)))  # ready: no new process
    assert len(argv_log.read_text().splitlines()) == 1
    await sidecar.stop()


async def test_cancelled_caller_does_not_cancel_the_shared_start(
    make_sidecar: MakeSidecar,
) -> None:
    sidecar = make_sidecar({"FAKE_LLAMA_LOAD_DELAY": "0.3"})
    impatient = asyncio.create_task(sidecar.ensure_ready())
    await wait_for(lambda: sidecar.state is SidecarState.STARTING, what="starting")
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    await sidecar.ensure_ready()
    assert sidecar.status().restarts == 0
    await sidecar.stop()


async def test_occupied_port_is_skipped(make_sidecar: MakeSidecar) -> None:
    sidecar = make_sidecar()
    first = sidecar.settings.port_range[0]
    with squat(first):
        await sidecar.ensure_ready()
        assert sidecar.status().port not in (None, first)
        await sidecar.stop()


class _RacyPorts(PortAllocator):
    """Believes every port is free, as if someone grabbed it between probe and bind."""

    def is_free(self, port: int) -> bool:
        return True


async def test_bind_failure_retries_on_another_port(make_sidecar: MakeSidecar) -> None:
    sidecar = make_sidecar()
    first, last = sidecar.settings.port_range
    sidecar = make_sidecar(ports=_RacyPorts(first, last))
    with squat(first):
        await sidecar.ensure_ready()
        port = sidecar.status().port
    assert port is not None and port != first
    lines = [line.text for line in sidecar.recent_logs()]
    assert any("couldn't bind HTTP server socket" in line for line in lines)
    assert any(f"port {first} is taken" in line for line in lines)
    assert sidecar.status().restarts == 0  # a port retry is part of the same start
    await sidecar.stop()


async def test_bind_retries_are_bounded(make_sidecar: MakeSidecar) -> None:
    first, _ = make_sidecar().settings.port_range
    sidecar = make_sidecar(ports=_RacyPorts(first, first + 1), bind_retries=1)
    refused = pytest.raises(SidecarStartError, match="could not bind a port after 2 attempts")
    with squat(first), squat(first + 1), refused:
        await sidecar.ensure_ready()


async def test_stop_during_loading(make_sidecar: MakeSidecar) -> None:
    sidecar = make_sidecar({"FAKE_LLAMA_LOAD_DELAY": "30"})
    waiter = asyncio.create_task(sidecar.ensure_ready())
    await wait_for(
        lambda: any("loading model" in line.text for line in sidecar.recent_logs()),
        what="loading",
    )
    pid = sidecar.status().pid
    assert pid is not None
    started = time.monotonic()
    await sidecar.stop()
    assert time.monotonic() - started < 2.0
    assert sidecar.state is SidecarState.STOPPED
    assert not pid_alive(pid)
    with pytest.raises(SidecarError, match="stopped while starting"):
        await waiter
    # the owner may be asked again later, and starts afresh
    sidecar2_waiter = asyncio.create_task(sidecar.stop())
    await sidecar2_waiter


async def test_drain_runs_before_the_signal(make_sidecar: MakeSidecar) -> None:
    sidecar = make_sidecar()
    await sidecar.ensure_ready()
    pid = sidecar.status().pid
    assert pid is not None
    seen: list[tuple[SidecarState, bool]] = []

    async def drain() -> None:
        seen.append((sidecar.state, pid_alive(pid)))

    await sidecar.stop(drain=drain)
    assert seen == [(SidecarState.STOPPING, True)]
    assert not pid_alive(pid)


async def test_chatty_child_never_blocks_and_log_file_stays_bounded(
    make_sidecar: MakeSidecar,
) -> None:
    limit = 256 * 1024
    sidecar = make_sidecar(
        {"FAKE_LLAMA_LOG_SPAM": str(6 * 1024 * 1024)},
        log_file_max_bytes=limit,
        log_ring_lines=500,
    )
    await sidecar.ensure_ready()
    status = sidecar.status()
    assert status.port is not None
    # every request makes it spam again; the pipe must keep flowing while we talk to it
    for _ in range(2):
        assert await http_status("127.0.0.1", status.port, "/health", limit=5.0) == 200
    await wait_for(lambda: sidecar.log.total_lines > 150_000, what="spam drained")
    log_file = sidecar.settings.log_dir / f"{sidecar.key}.log"
    assert log_file.stat().st_size <= limit
    backup = log_file.with_name(log_file.name + ".1")
    assert backup.exists() and backup.stat().st_size <= limit
    assert not log_file.with_name(log_file.name + ".2").exists()
    assert len(sidecar.recent_logs()) == 500
    await sidecar.stop()


async def test_inherited_llama_env_is_scrubbed(
    make_sidecar: MakeSidecar, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMA_ARG_PORT", "1")
    monkeypatch.setenv("LLAMA_ARG_MODEL", "/elsewhere.gguf")
    monkeypatch.setenv("LLAMA_ARG_CTX_SIZE", "99")
    monkeypatch.setenv("LLAMA_API_KEY", "inherited-secret")
    argv_log = tmp_path / "argv.jsonl"
    sidecar = make_sidecar({"FAKE_LLAMA_ARGV_LOG": str(argv_log), "LLAMA_ARG_N_PARALLEL": "2"})
    await sidecar.ensure_ready()  # an inherited API key would make the fake demand auth
    record = json.loads(argv_log.read_text())
    assert record["env"] == {"LLAMA_ARG_N_PARALLEL": "2"}  # only what the profile set
    config_home = Path(record["XDG_CONFIG_HOME"])
    assert config_home == sidecar.settings.config_home
    assert config_home.is_dir() and not any(config_home.iterdir())
    assert record["argv"][-4:] == ["--host", "127.0.0.1", "--port", str(sidecar.status().port)]
    await sidecar.stop()


async def test_follow_logs_yields_new_lines(make_sidecar: MakeSidecar) -> None:
    sidecar = make_sidecar({"FAKE_LLAMA_LOAD_DELAY": "0.2"})
    follower = sidecar.follow_logs()
    start = asyncio.create_task(sidecar.ensure_ready())
    seen: list[str] = []
    async with asyncio.timeout(10):
        async for line in follower:
            seen.append(line.text)
            if "listening on" in line.text:
                break
    await follower.aclose()
    await start
    assert any("loading model" in text for text in seen)
    assert seen[0].startswith("[llamasup] started pid")
    await sidecar.close()
    ended = sidecar.follow_logs(backlog=2)
    assert len([line async for line in ended]) == 2  # a closed log ends its followers


async def test_unhealthy_child_is_killed_and_a_caller_meanwhile_gets_a_fresh_one(
    make_sidecar: MakeSidecar,
) -> None:
    events: list[SidecarEventKind] = []
    sidecar = make_sidecar(
        {"FAKE_LLAMA_FAIL_HEALTH_AFTER": "0.1", "FAKE_LLAMA_IGNORE_SIGTERM": "1"},
        health_interval=0.05,
        stop_grace=0.3,
        on_event=lambda event: events.append(event.kind),
    )
    await sidecar.ensure_ready()
    first_pid = sidecar.status().pid
    assert first_pid is not None
    await wait_for(lambda: sidecar.state is SidecarState.STOPPING, what="unhealthy stop")
    await sidecar.ensure_ready()  # waits for the kill, then starts a new run
    assert events[:3] == [
        SidecarEventKind.READY,
        SidecarEventKind.UNHEALTHY,
        SidecarEventKind.READY,
    ]
    assert sidecar.status().pid not in (None, first_pid)
    assert not pid_alive(first_pid)
    assert sidecar.status().restarts == 1
    await sidecar.stop()
    assert sidecar.state is SidecarState.STOPPED


async def test_unexpected_error_while_starting_still_ends_in_failed(
    make_sidecar: MakeSidecar, settings: SidecarSettings
) -> None:
    ports = PortAllocator(*settings.port_range)
    sidecar = make_sidecar(ports=ports)
    sidecar.settings.config_home.parent.mkdir(parents=True, exist_ok=True)
    sidecar.settings.config_home.write_text("a file where the empty config dir should be")
    with pytest.raises(SidecarStartError, match="cannot start: FileExistsError"):
        await sidecar.ensure_ready()
    assert sidecar.state is SidecarState.FAILED
    assert sidecar.status().port is None and ports.held == frozenset()


async def test_a_detached_sidecar_hands_over_its_output_on_either_loop(
    make_sidecar: MakeSidecar,
) -> None:
    """asyncio gives the child pipes, uvloop socket pairs: a hand-over must get both read
    ends either way (without them the next image could not read the child, and the child's
    next write would hit a closed pipe once the exec closes this image's ends)."""
    sidecar = make_sidecar()
    await sidecar.ensure_ready()
    handle = sidecar.detach()
    assert handle is not None
    assert sorted(handle.pipes) == [1, 2]
    try:
        # what the child writes now waits in the handed-over stderr, not in this image's log
        assert sidecar.base_url is not None
        async with httpx.AsyncClient(base_url=sidecar.base_url, trust_env=False) as client:
            headers = {k.decode(): v.decode() for k, v in sidecar.auth_headers}
            reply = await client.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}]},
                headers=headers,
            )
            assert reply.status_code == 200

        def written() -> bytes | None:
            readable, _, _ = select.select([handle.pipes[2]], [], [], 0)
            return os.read(handle.pipes[2], 65536) if readable else None

        assert b"processing task" in await wait_for(written, what="output in the duplicate")
    finally:
        for fd in handle.pipes.values():
            os.close(fd)
        await sidecar.stop()
