"""Readiness from the server's own output: its ready line, then one confirming ``/health``;
a slow poll only as the fallback (on the fake llama-server, both event loops)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from llamasup.sidecars.probes import wait_until_ready
from llamasup.sidecars.proclog import ProcessLog
from llamasup.sidecars.run import Run
from llamasup.sidecars.sidecar import Sidecar
from llamasup.sidecars.types import SidecarSettings, SidecarState

pytestmark = pytest.mark.anyio

MakeSidecar = Callable[..., Sidecar]

#: how long the fake loads: long enough that a poll from the spawn on (5 ms, backing off to
#: 200 ms) would ask ~12 times
LOAD = 0.6


def health_probes(sidecar: Sidecar) -> dict[str, int]:
    """The fake's count of /health requests answered while loading and once ready."""
    counts: dict[str, int] = httpx.get(
        f"http://127.0.0.1:{sidecar.port}/x-fake/health-probes", timeout=10, trust_env=False
    ).json()
    return counts


async def test_the_ready_line_is_confirmed_by_one_probe_and_nothing_polls_the_load(
    make_sidecar: MakeSidecar,
) -> None:
    # an older build's "HTTP server is listening" comes before the load: not readiness
    sidecar = make_sidecar(
        {"FAKE_LLAMA_LOAD_DELAY": str(LOAD), "FAKE_LLAMA_LISTENING_FIRST": "1"},
        health_interval=60.0,  # no liveness probe in the counts
    )
    await sidecar.ensure_ready()
    assert sidecar.state is SidecarState.READY
    lines = [line.text for line in sidecar.recent_logs()]
    assert any("HTTP server is listening" in text for text in lines)
    loaded = next(n for n, text in enumerate(lines) if "model loaded" in text)
    assert next(n for n, text in enumerate(lines) if "ready on port" in text) > loaded
    counts = health_probes(sidecar)
    assert counts["ready"] == 1  # the one confirming probe
    # one woken by the early "listening" line, the rest the fallback's (one per 200 ms)
    assert counts["loading"] <= 1 + LOAD / sidecar.settings.ready_poll_max + 1
    await sidecar.stop()


async def test_a_server_without_the_ready_line_is_found_by_the_slow_poll(
    make_sidecar: MakeSidecar,
) -> None:
    sidecar = make_sidecar(
        {"FAKE_LLAMA_LOAD_DELAY": str(LOAD), "FAKE_LLAMA_NO_READY_LINE": "1"},
        health_interval=60.0,
    )
    await sidecar.ensure_ready()
    assert not any("model loaded" in line.text for line in sidecar.recent_logs())
    counts = health_probes(sidecar)
    assert counts["ready"] == 1
    assert counts["loading"] <= LOAD / sidecar.settings.ready_poll_max + 1
    await sidecar.stop()


class HealthServer:
    """An in-process /health that answers 503 for ``load`` seconds, then 200 (calling
    ``on_ready`` then, as llama-server prints its ready line); records what it answered."""

    def __init__(self, load: float, on_ready: Callable[[], None]) -> None:
        self.load = load
        self.on_ready = on_ready
        self.ready = False
        self.answers: list[int] = []
        self.port = 0

    async def __aenter__(self) -> HealthServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def start_loading(self) -> None:
        asyncio.get_running_loop().call_later(self.load, self._loaded)

    def _loaded(self) -> None:
        self.ready = True
        self.on_ready()

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        code = 200 if self.ready else 503
        self.answers.append(code)
        writer.write(f"HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()


@pytest.mark.parametrize("ready_line", [True, False], ids=["llama-server", "command"])
async def test_the_poll_is_slow_while_a_ready_line_is_expected_and_fast_otherwise(
    settings: SidecarSettings, ready_line: bool, tmp_path: Path
) -> None:
    """Unit level (no process, so no start-up noise): over the same 0.3 s load a
    llama-server is asked once or twice (the fallback every ``ready_poll_max``), a
    ``command:`` server, which prints nothing llamasup knows, every 5 ms backing off."""
    run = Run(0, ProcessLog(tmp_path / "log"))
    run.ready_marker_seen = True  # the child bound the port (no BIND_SETTLE wait)

    def print_ready_line() -> None:
        if ready_line:
            run.pipe_data_received(2, b"I srv  llama_server: model loaded\n")

    async with HealthServer(0.3, print_ready_line) as server:
        run.port = server.port
        server.start_loading()
        await asyncio.wait_for(
            wait_until_ready(
                run,
                model="m",
                health_path="/health",
                settings=settings,
                log=run.log,
                ready_line=ready_line,
            ),
            10,
        )
    assert server.answers[-1] == 200 and server.answers.count(200) == 1
    loading = server.answers.count(503)
    if ready_line:
        assert loading <= 0.3 / settings.ready_poll_max + 1
    else:
        assert loading >= 5  # 5, 7.5, 11, 17, 25, ... ms apart


def test_a_settled_run_keeps_its_output_but_no_longer_searches_it(tmp_path: Path) -> None:
    """Markers count until the sidecar is ready; after that a ready server's per-request
    lines are only logged (a line quoting a marker cannot doom or wake a ready run)."""
    log = ProcessLog(tmp_path / "log")
    run = Run(0, log)
    run.pipe_data_received(2, b"main: server is listening on http://127.0.0.1:1\n")
    assert run.ready_marker_seen and run.wake.is_set() and not run.ready_line_seen
    run.wake.clear()
    run.settled()
    run.pipe_data_received(2, b"main: model loaded\nsrv: couldn't bind HTTP server socket\n")
    assert not run.wake.is_set() and not run.ready_line_seen
    assert not run.bind_failed and not run.doomed.is_set()
    assert [line.text for line in log.recent()][-2:] == [
        "main: model loaded",
        "srv: couldn't bind HTTP server socket",
    ]


async def test_a_ready_sidecar_has_settled_its_run(make_sidecar: MakeSidecar) -> None:
    sidecar = make_sidecar({})
    await sidecar.ensure_ready()
    run = sidecar._run
    assert run is not None and run.ready_line_seen and not run.watching_output
    await sidecar.stop()
