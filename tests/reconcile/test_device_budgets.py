"""Per-device memory budgets in a running Service against fake sidecars: a sidecar is charged
on the GPU its layers go to, so the GPU's budget evicts while host memory is free, a CPU-only
model fits beside them, and status and metrics show each device's share."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_helpers import ProfileWriter, chat, running_service

from llamasup.profiles.load import load_profiles
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


async def test_a_declared_memory_per_device_is_charged_where_it_says(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    # a command-like model whose GGUF cannot be read: the profile says where its memory goes
    writer = _writer(tmp_path, fake_server_bin)
    writer.write(
        {
            "a": "preload: true\nmemory: {CUDA0: 6GiB, host: 30GiB}",
            "b": "memory: {CUDA0: 8GiB, host: 2GiB}",
            "c": "memory: {CUDA0: 4GiB, host: 40GiB}",
        }
    )
    async with running_service(writer.target.parent, watch=False) as running:
        await wait_for(lambda: "a" in running.ready_pids(), what="a ready")
        rows = {row["model"]: row for row in (await running.status())["sidecars"]}
        assert rows["a"]["memory"] == 36 * GIB
        assert rows["a"]["memory_devices"] == {"CUDA0": 6 * GIB, "host": 30 * GIB}
        # 6 + 8 of a 16 GiB GPU, 30 + 2 of 64 GiB host: both run
        await chat(running.client, "b")
        assert {"a", "b"} <= set(running.ready_pids())
        # c fits the GPU beside a (6 + 4) but not the host beside a (30 + 40 > 64): the host
        # budget evicts a, and b stays (8 + 4 on the GPU, 2 + 40 on the host)
        await chat(running.client, "c")
        await wait_for(lambda: "a" not in running.pids(), what="a evicted for c's host memory")
        assert {"b", "c"} <= set(running.ready_pids())


def test_pinned_models_over_a_device_budget_are_named_at_validation(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    path = tmp_path / "p.yaml"
    path.write_text(
        "server: {memory_budget: {CUDA0: 16GiB, host: 64GiB}}\n"
        "models:\n"
        f"  a: {{path: {model}, pinned: true, memory: {{CUDA0: 10GiB}}}}\n"
        f"  b: {{path: {model}, pinned: true, memory: {{CUDA0: 8GiB, host: 1GiB}}}}\n"
    )
    profiles = load_profiles(path)
    warnings = [str(issue) for issue in profiles.warnings]
    assert any(
        "'b' will be refused: it declares 8.0 GiB on CUDA0 and pinned models before it 10.0 GiB"
        ", over memory_budget.CUDA0 16.0 GiB" in warning
        for warning in warnings
    ), warnings
    assert profiles.models["a"].memory == 10 * GIB
    assert profiles.models["b"].memory_devices == (("CUDA0", 8 * GIB), ("host", 1 * GIB))
