"""The buffers a real llama-server reports at load (``-lv 4``) reach status and the log, next
to the estimate they are compared with; at the default verbosity nothing is claimed."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from service_helpers import port_range, running_service

from llamasup.testing.poll import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_reported_buffers_are_shown_beside_the_estimate(
    tmp_path: Path, llama_server_bin: Path, tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(f"""
server:
  binary: {llama_server_bin}
  ports: {port_range()}
  state_dir: {tmp_path / "state"}
  base_args: [--ctx-size, 512, --parallel, 1]
models:
  verbose: {{path: {tiny_model}, args: [-lv, 4], preload: true}}
  quiet: {{path: {tiny_model}, preload: true}}
""")
    with caplog.at_level(logging.INFO, logger="llamasup"):
        async with (
            running_service(path, watch=False) as running,
            httpx.AsyncClient(base_url=running.url, trust_env=False) as client,
        ):

            async def rows() -> dict[str, dict[str, object]] | None:
                status = (await client.get("/api/status")).json()
                found = {row["model"]: row for row in status["sidecars"]}
                ready = all(row["state"] == "ready" for row in found.values())
                return found if len(found) == 2 and ready else None

            found = await wait_for(rows, timeout=60, what="both sidecars ready")
    verbose, quiet = found["verbose"], found["quiet"]
    reported = verbose["memory_reported"]
    assert isinstance(reported, dict) and set(reported) == {"host"}
    assert isinstance(verbose["memory"], int)
    # the tiny model's buffers: a few MiB; the estimate covers them and llama-server's overhead
    assert 0 < reported["host"] <= verbose["memory"]
    assert quiet["memory_reported"] is None  # default verbosity prints no buffer sizes
    assert "verbose: memory at load: llama-server reported" in caplog.text
    assert "quiet: memory at load" not in caplog.text
