"""``GET /metrics`` on a running service: llamasup's own series follow what happened, and
every ready sidecar's llama-server series are re-exposed with model and sidecar labels."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from service_helpers import (
    RunningService,
    chat,
    fake_profile,
    port_range,
    running_service,
    write_model_files,
)

from llamasup.service.sidecar_metrics import merge_families
from llamasup.testing.fake_bodies import metrics_text
from llamasup.testing.poll import wait_for

pytestmark = pytest.mark.anyio


async def scrape(running: RunningService) -> list[Sample]:
    reply = await running.client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return [
        sample for family in text_string_to_metric_families(reply.text) for sample in family.samples
    ]


def values(samples: list[Sample], name: str, **labels: str) -> list[float]:
    """Values of the samples called ``name`` whose labels include ``labels``."""
    return [
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = values(samples, name, **labels)
    assert len(found) == 1, (name, labels, found)
    return found[0]


async def test_own_and_sidecar_series(tmp_path: Path, fake_server_bin: Path) -> None:
    write_model_files(tmp_path, ["alpha", "beta"])
    root = tmp_path / "profiles"
    root.mkdir()
    state = tmp_path / "state"
    ports = port_range()
    models = {"alpha": "args: [--metrics]", "beta": "preload: true"}
    (root / "p.yaml").write_text(fake_profile(fake_server_bin, state, models, ports=ports))
    async with running_service(root, watch=False) as running:
        first = await scrape(running)
        assert value(first, "llamasup_reconcile_passes_total", result="ok") >= 1
        assert values(first, "llamasup_requests_total") == []
        assert value(first, "llamasup_sidecars", model="alpha", state="ready") == 0

        await chat(running.client, "alpha")
        alpha_key = next(
            s.key for s in running.service.supervisor.statuses() if s.sidecar.model == "alpha"
        )
        samples = await scrape(running)
        request = {"model": "alpha", "agent": "", "route": "/v1/chat/completions"}
        assert value(samples, "llamasup_requests_total", **request, status="200") == 1
        assert value(samples, "llamasup_request_duration_seconds_count", **request) == 1
        assert value(samples, "llamasup_time_to_first_byte_seconds_count", **request) == 1
        assert value(samples, "llamasup_request_wait_seconds_count", **request) == 1
        assert value(samples, "llamasup_requests_in_flight", model="alpha", agent="") == 0
        assert value(samples, "llamasup_sidecars", model="alpha", state="ready") == 1
        assert value(samples, "llamasup_sidecars", model="alpha", state="starting") == 0
        assert value(samples, "llamasup_sidecar_starts_total", model="alpha") == 1
        assert value(samples, "llamasup_cold_start_seconds_count", model="alpha") == 1
        assert value(samples, "llamasup_cold_start_seconds_sum", model="alpha") > 0
        assert value(samples, "llamasup_sidecar_in_flight", model="alpha", sidecar=alpha_key) == 0
        assert value(samples, "llamasup_reconcile_passes_total", result="ok") > 0
        assert value(samples, "llamasup_reconcile_duration_seconds_count") > 0
        assert value(samples, "llamasup_demands_waiting") == 0

        # the sidecar's own series: only alpha runs with --metrics; beta answers 501
        sidecar = {"model": "alpha", "sidecar": alpha_key}
        assert value(samples, "llamacpp:n_decode_total", **sidecar) == 1
        assert value(samples, "llamacpp:prompt_tokens_total", **sidecar) > 0
        assert value(samples, "llamacpp:requests_processing", **sidecar) == 0
        assert values(samples, "llamacpp:n_decode_total", model="beta") == []
        families = {
            f.name: f.type
            for f in text_string_to_metric_families((await running.client.get("/metrics")).text)
        }
        assert families["llamacpp:n_decode"] == "counter"
        assert families["llamacpp:requests_processing"] == "gauge"

        models["beta"] = "preload: true\nargs: [-c, 1024]"
        edited = fake_profile(fake_server_bin, state, models, ports=ports)
        applied = await running.client.post("/api/apply", json={"files": {"p.yaml": edited}})
        assert applied.json()["result"] == "ok"
        unloaded = await running.client.post("/api/unload", json={"model": "alpha"})
        assert len(unloaded.json()["stopped"]) == 1
        await wait_for(lambda: "beta" in running.pids() and running.pids()["beta"] is not None)
        samples = await scrape(running)
        assert value(samples, "llamasup_profile_reloads_total", trigger="apply", result="ok") == 1
        assert value(samples, "llamasup_sidecar_stops_total", reason="unloaded") == 1
        assert value(samples, "llamasup_sidecar_stops_total", reason="changed") == 1
        assert value(samples, "llamasup_sidecars", model="alpha", state="ready") == 0
        assert values(samples, "llamacpp:n_decode_total") == []  # no sidecar with --metrics


def test_merge_families_adds_labels_and_skips_garbage() -> None:
    one = metrics_text({"n_decode_total": 3.0}, {"requests_processing": 1.0})
    two = metrics_text({"n_decode_total": 5.0}, {"requests_processing": 0.0})
    merged = merge_families(
        [
            ("alpha", "k1", one),
            ("beta", "k2", "<html>oops</html>\n"),
            ("beta", "k3", "llamacpp:n_decode_total{broken 1\n"),
            ("gamma", "k4", two),
        ]
    )
    by_name = {family.name: family for family in merged}
    assert sorted(by_name) == ["llamacpp:n_decode", "llamacpp:requests_processing"]
    decode = by_name["llamacpp:n_decode"]
    assert decode.type == "counter"
    assert [(s.name, s.labels, s.value) for s in decode.samples] == [
        ("llamacpp:n_decode_total", {"model": "alpha", "sidecar": "k1"}, 3.0),
        ("llamacpp:n_decode_total", {"model": "gamma", "sidecar": "k4"}, 5.0),
    ]
    gauge = by_name["llamacpp:requests_processing"]
    assert [(s.labels["sidecar"], s.value) for s in gauge.samples] == [("k1", 1.0), ("k4", 0.0)]
    assert merge_families([]) == []


async def test_a_request_that_never_got_a_sidecar_still_counts_its_wait(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    write_model_files(tmp_path, ["slow"])
    slow = "env: {FAKE_LLAMA_LOAD_DELAY: '5'}"
    text = fake_profile(fake_server_bin, tmp_path / "state", {"slow": slow})
    profile = tmp_path / "p.yaml"
    profile.write_text(text.replace("start_timeout: 20s", "start_timeout: 0.5s"))
    async with running_service(profile, watch=False) as running:
        body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
        reply = await running.client.post("/v1/chat/completions", json=body)
        assert reply.status_code == 504
        samples = await scrape(running)
        request = {"model": "slow", "agent": "", "route": "/v1/chat/completions"}
        assert value(samples, "llamasup_requests_total", **request, status="504") == 1
        assert value(samples, "llamasup_request_wait_seconds_count", **request) == 1
        assert value(samples, "llamasup_request_wait_seconds_sum", **request) >= 0.45
