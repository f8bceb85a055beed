"""A burst of requests through llamasup keeps no more connections open to a real
llama-server than its fixed HTTP threads: a connection past them can wait seconds for a
kept-alive one to lapse (5.5 s measured at 16 clients on -np 4, bench/RESULTS.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from service_helpers import port_range, running_service

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_burst_stays_within_the_sidecars_http_threads(
    tmp_path: Path, llama_server_bin: Path, tiny_model: Path
) -> None:
    path = tmp_path / "profiles.yaml"
    # 3 HTTP threads: 1 connection for requests, 2 left for llamasup's probes and scrapes
    path.write_text(f"""
server:
  binary: {llama_server_bin}
  ports: {port_range()}
  state_dir: {tmp_path / "state"}
models:
  tiny: {{path: {tiny_model}, args: [-c, 512, -np, 1, --threads-http, 3], preload: true}}
""")
    async with (
        running_service(path, watch=False) as running,
        httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=60) as client,
    ):
        body = {
            "model": "tiny",
            "max_tokens": 2,
            "messages": [{"role": "user", "content": "hi"}],
            "ignore_eos": True,
        }
        for _ in range(2):
            replies = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=body) for _ in range(8))
            )
            assert [reply.status_code for reply in replies] == [200] * 8
        sidecar = next(s.sidecar for s in running.service.supervisor.statuses())
        assert sidecar.port is not None
        upstream = running.service.proxy.client
        assert upstream.open_connections("127.0.0.1", sidecar.port) == 1
