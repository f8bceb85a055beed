"""Streaming, cancellation, on-demand starts, eviction and concurrency limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llamasup.proxy.hooks import RequestRecord
from llamasup.service.exposition import Registry
from llamasup.service.metrics import RequestObserver
from llamasup.testing.poll import poll_until, wait_for
from proxy.pool_fixture import ProxyServer
from proxy.proxy_profiles import PROFILE, ProxyFactory


def key_of(proxy: ProxyServer, model: str, agent: str | None = None) -> str:
    return proxy.resolver.resolve(model, agent).spec.key


def upstream_stats(proxy: ProxyServer, key: str) -> dict[str, Any]:
    sidecar = proxy.pool.sidecar(key)
    assert sidecar is not None
    stats: dict[str, Any] = httpx.get(f"http://127.0.0.1:{sidecar.port}/x-fake/stats").json()
    return stats


def stream_body(model: str, tokens: int, delay: float, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "x_fake_ctl": {"tokens": tokens, "delay": delay},
        **extra,
    }


def sse_events(lines: Iterator[str]) -> Iterator[str]:
    """The data payloads of an SSE stream, as they arrive."""
    for line in lines:
        if line.startswith("data: "):
            yield line[6:]


@pytest.fixture(params=["llamasup", "plain"])
def either_front(request: pytest.FixtureRequest, make_proxy: ProxyFactory) -> ProxyServer:
    """The proxy behind llamasup's front (streams take the direct body shortcut) and behind
    uvicorn's protocol as it comes (every piece an ASGI message)."""
    server: ProxyServer = make_proxy(front=request.param)
    return server


def test_stream_passes_through_before_upstream_finishes(either_front: ProxyServer) -> None:
    proxy = either_front
    key = key_of(proxy, "alpha")
    body = stream_body("alpha", 6, 0)
    body["x_fake_ctl"]["hold_after"] = 1
    with (
        httpx.Client(base_url=proxy.url, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        events = sse_events(response.iter_lines())
        first = json.loads(next(events))
        assert first["choices"][0]["delta"]["role"] == "assistant"
        # the sidecar holds the rest of its stream until told: the first event came through
        # while it was still generating, nothing was buffered until the end
        assert upstream_stats(proxy, key)["active"] == 1
        sidecar = proxy.pool.sidecar(key)
        assert sidecar is not None
        httpx.post(f"http://127.0.0.1:{sidecar.port}/x-fake/release")
        rest = list(events)
    assert rest[-1] == "[DONE]"
    assert len(rest) == 6  # five more tokens and [DONE]
    assert upstream_stats(proxy, key)["active"] == 0


def test_client_disconnect_cancels_upstream(either_front: ProxyServer) -> None:
    proxy = either_front
    key = key_of(proxy, "alpha")
    with (
        httpx.Client(base_url=proxy.url, timeout=30) as client,
        client.stream(
            "POST", "/v1/chat/completions", json=stream_body("alpha", 10_000, 0.01)
        ) as response,
    ):
        events = sse_events(response.iter_lines())  # keep a reference: dropping the
        next(events)  # iterator would let httpx close the connection right here
        assert proxy.pool.in_flight[key] == 1
        assert upstream_stats(proxy, key)["cancelled"] == 0
    # leaving the with-block closed the connection mid-stream
    poll_until(lambda: upstream_stats(proxy, key)["cancelled"] == 1, what="upstream cancel")
    poll_until(lambda: proxy.pool.in_flight[key] == 0, what="lease released")
    assert upstream_stats(proxy, key)["active"] == 0


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_sidecar_killed_mid_stream_ends_with_error_event(
    either_front: ProxyServer, path: str
) -> None:
    proxy = either_front
    key = key_of(proxy, "alpha")
    started = time.monotonic()
    with (
        httpx.Client(base_url=proxy.url, timeout=30) as client,
        client.stream(
            "POST", path, json=stream_body("alpha", 10_000, 0.01, max_tokens=100_000)
        ) as response,
    ):
        lines = response.iter_lines()
        next(sse_events(lines))
        sidecar = proxy.pool.sidecar(key)
        assert sidecar is not None
        os.kill(sidecar.proc.pid, signal.SIGKILL)
        tail = list(lines)  # must end, not hang
    assert time.monotonic() - started < 10
    data = [line[6:] for line in tail if line.startswith("data: ")]
    error = json.loads(data[-1])
    if path == "/v1/messages":
        assert "event: error" in tail
        assert error["type"] == "error" and error["error"]["type"] == "api_error"
        assert error["error"]["message"].startswith("llamasup:")
    else:
        assert error["error"]["code"] == "upstream_disconnected"
        assert error["error"]["message"].startswith("llamasup:")
    # every event before the error is whole: the torn one (if any) was held back
    for payload in data[:-1]:
        json.loads(payload)
    poll_until(lambda: proxy.pool.in_flight[key] == 0, what="lease released")


def test_cold_start_on_demand(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy(load_delay=0.3)
    key = key_of(proxy, "alpha")
    assert proxy.pool.state(key) is None
    response = httpx.post(proxy.url + "/v1/completions", json={"model": "alpha"}, timeout=30)
    assert response.status_code == 200
    assert proxy.pool.starts[key] == 1
    assert proxy.pool.state(key) == "ready"


def test_fifty_concurrent_first_requests_start_one_sidecar(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy(load_delay=0.5)
    key = key_of(proxy, "alpha")

    async def burst() -> list[int]:
        async with httpx.AsyncClient(
            base_url=proxy.url, timeout=60, limits=httpx.Limits(max_connections=100)
        ) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/v1/chat/completions", json={"model": "alpha@coder" if i % 2 else "a"}
                    )
                    for i in range(50)
                )
            )
        return [r.status_code for r in responses]

    assert asyncio.run(burst()) == [200] * 50
    assert proxy.pool.starts == {key: 1}
    assert proxy.pool.max_in_flight[key] > 1


def test_disconnect_while_waiting_for_start_withdraws_demand(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy(load_delay=3.0)
    key = key_of(proxy, "alpha")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(proxy.url + "/v1/completions", json={"model": "alpha"}, timeout=0.5)
    poll_until(lambda: proxy.pool.withdrawn[key] == 1, what="demand withdrawn")
    assert proxy.pool.waiting[key] == 0
    assert proxy.pool.in_flight[key] == 0


def test_start_timeout_gives_504(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy(PROFILE.replace("start_timeout: 20s", "start_timeout: 0.3s"), load_delay=5.0)
    response = httpx.post(proxy.url + "/v1/completions", json={"model": "alpha"}, timeout=30)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "sidecar_start_timeout"
    assert response.headers["x-llamasup-error"] == "1"


def test_eviction_waits_for_in_flight_request(proxy: ProxyServer) -> None:
    key = key_of(proxy, "alpha")
    with (
        httpx.Client(base_url=proxy.url, timeout=30) as client,
        client.stream(
            "POST", "/v1/chat/completions", json=stream_body("alpha", 15, 0.05)
        ) as response,
    ):
        events = sse_events(response.iter_lines())
        next(events)
        assert proxy.pool.in_flight[key] == 1
        sidecar = proxy.pool.sidecar(key)
        assert sidecar is not None
        eviction = asyncio.run_coroutine_threadsafe(proxy.pool.evict(key), proxy._loop)
        rest = list(events)
        assert rest[-1] == "[DONE]" and len(rest) == 15  # the whole answer arrived
    eviction.result(10)
    assert proxy.pool.in_flight[key] == 0
    assert not sidecar.alive
    assert proxy.pool.sidecar(key) is None


def test_concurrency_limit_queues_then_429(proxy: ProxyServer) -> None:
    key = key_of(proxy, "beta")  # concurrency 1, queue 1

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=60) as client:
            slow = asyncio.ensure_future(
                client.post(
                    "/v1/chat/completions",
                    json={"model": "beta", "x_fake_ctl": {"delay": 0.05}, "stream": True},
                )
            )
            await wait_for(lambda: proxy.pool.in_flight[key] == 1)
            queued = asyncio.ensure_future(client.post("/v1/completions", json={"model": "beta"}))
            gate = proxy.app._limits.gate(proxy.resolver.resolve("beta").model)
            assert gate is not None
            await wait_for(lambda: len(gate.waiters) == 1)
            refused = await client.post("/v1/completions", json={"model": "beta"})
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "model_busy"
            assert refused.headers["x-llamasup-error"] == "1"
            return [(await slow).status_code, (await queued).status_code, refused.status_code]

    assert asyncio.run(scenario()) == [200, 200, 429]
    assert proxy.pool.max_in_flight[key] == 1


class Recorder:
    def __init__(self) -> None:
        self.started: list[tuple[str, str, str]] = []
        self.finished: list[RequestRecord] = []

    def request_started(self, route: str, model: str, agent: str) -> None:
        self.started.append((route, model, agent))

    def request_finished(self, record: RequestRecord) -> None:
        self.finished.append(record)


def test_observer_sees_every_request(make_proxy: ProxyFactory) -> None:
    recorder = Recorder()
    proxy = make_proxy(observer=recorder)
    httpx.post(proxy.url + "/v1/completions", json={"model": "a"}, timeout=30)
    with httpx.stream(
        "POST",
        proxy.url + "/v1/chat/completions",
        json=stream_body("alpha@coder", 3, 0.0),
        timeout=30,
    ) as response:
        response.read()
    httpx.post(proxy.url + "/v1/completions", json={"model": "nope"}, timeout=30)
    poll_until(lambda: len(recorder.finished) == 3)
    plain, streamed, unknown = recorder.finished
    assert recorder.started == [
        ("/v1/completions", "alpha", ""),
        ("/v1/chat/completions", "alpha", "coder"),
    ]
    assert (plain.status, plain.streamed, plain.model, plain.started) == (200, False, "alpha", True)
    assert (streamed.status, streamed.streamed, streamed.agent) == (200, True, "coder")
    assert streamed.ttfb is not None and 0 < streamed.ttfb <= streamed.duration
    assert streamed.wait <= streamed.ttfb
    assert (unknown.status, unknown.error, unknown.model, unknown.started) == (
        404,
        "model_not_found",
        "",
        False,
    )


@pytest.mark.parametrize("content_type", ["text/event-stream", "application/x-ndjson"])
def test_a_response_broken_by_its_sidecar_counts_as_502(
    make_proxy: ProxyFactory, content_type: str
) -> None:
    """The client saw 200 (and, for a stream, an in-band error event), but what happened
    was a failed upstream: metrics count it as such."""
    registry = Registry()
    proxy = make_proxy(observer=RequestObserver(registry))
    body = stream_body("alpha", 10, 0.0)
    body["x_fake_ctl"].update(crash_after=3, content_type=content_type)
    with (
        httpx.Client(base_url=proxy.url, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        with contextlib.suppress(httpx.HTTPError):  # the plain body is cut off
            response.read()
    labels = {"model": "alpha", "agent": "", "route": "/v1/chat/completions"}

    def count(status: str) -> float:
        return (
            registry.get_sample_value("llamasup_requests_total", {**labels, "status": status}) or 0
        )

    poll_until(lambda: count("502") == 1, what="the broken response counted")
    assert count("200") == 0
