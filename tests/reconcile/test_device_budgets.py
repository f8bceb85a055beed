"""Per-device memory budgets in a running Service against fake sidecars: a sidecar is charged
on the GPU its layers go to, so the GPU's budget evicts while host memory is free, a CPU-only
model fits beside them, and status and metrics show each device's share."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_helpers import ProfileWriter, chat, running_service

from llamasup.testing.poll import wait_for

pytestmark = pytest.mark.anyio

GIB = 2**30
BUDGET = "memory_budget: {host: 64GiB, CUDA0: 16GiB}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _writer(tmp_path: Path, fake_server_bin: Path) -> ProfileWriter:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    return ProfileWriter(fake_server_bin, tmp_path, profiles / "p.yaml", BUDGET)


async def test_the_gpu_budget_evicts_while_host_memory_is_free(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = _writer(tmp_path, fake_server_bin)
    writer.write(
        {
            "a": "preload: true\nmemory: 10GiB",
            "b": "memory: 10GiB",
            "cpu": "memory: 10GiB\nargs: [-ngl, '0']",
        }
    )
    async with running_service(writer.target.parent, watch=False) as running:
        await wait_for(lambda: "a" in running.ready_pids(), what="a ready")
        # on the host (-ngl 0): fits beside a, whose 10 GiB are on the GPU
        await chat(running.client, "cpu")
        assert {"a", "cpu"} <= set(running.ready_pids())
        status = await running.status()
        assert status["limits"]["devices"] == {
            "host": {"budget": 64 * GIB, "estimated": 10 * GIB},
            "CUDA0": {"budget": 16 * GIB, "estimated": 10 * GIB},
        }
        rows = {row["model"]: row for row in status["sidecars"]}
        assert rows["a"]["memory_devices"] == {"CUDA0": 10 * GIB, "host": 0}
        assert rows["cpu"]["memory_devices"] == {"host": 10 * GIB}
        # b wants 10 GiB of a 16 GiB GPU that a holds: a goes, although the host has 44 free
        await chat(running.client, "b")
        await wait_for(lambda: "a" not in running.pids(), what="a evicted for b")
        assert {"b", "cpu"} <= set(running.ready_pids())
        samples = _samples((await running.client.get("/metrics")).text)
        assert samples["llamasup_device_memory_budget_bytes"] == {
            "CUDA0": 16 * GIB,
            "host": 64 * GIB,
        }
        assert samples["llamasup_device_memory_estimate_bytes"] == {
            "CUDA0": 10 * GIB,
            "host": 10 * GIB,
        }


def _samples(text: str) -> dict[str, dict[str, float]]:
    """Per-device gauges of a scrape, by metric and device."""
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "device" in sample.labels:
                found.setdefault(sample.name, {})[sample.labels["device"]] = sample.value
    return found


async def test_a_model_bigger_than_its_gpu_is_refused_naming_the_device(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = _writer(tmp_path, fake_server_bin)
    writer.write({"big": "memory: 20GiB"})
    async with running_service(writer.target.parent, watch=False) as running:
        body = {"model": "big", "messages": [{"role": "user", "content": "hi"}]}
        reply = await running.client.post("/v1/chat/completions", json=body)
        assert reply.status_code == 503
        assert "on CUDA0, whose budget is 16.0 GiB" in reply.json()["error"]["message"]
        assert not running.pids()
