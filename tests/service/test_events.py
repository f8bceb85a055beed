"""``GET /api/events``: status, sidecar, pass and reload events; bounded per client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import fake_profile, running_service, write_model_files

from llamasup.service.api_errors import ApiError
from llamasup.service.events import Event, EventHub, Subscription
from llamasup.testing.poll import wait_for

pytestmark = pytest.mark.anyio


async def sse(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event name, data) of a text/event-stream response, as they come."""
    name, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif not line and data:
            yield name, json.loads(data)
            name, data = "message", ""


async def next_event(
    events: AsyncIterator[tuple[str, dict[str, Any]]], wanted: str, timeout: float = 20.0
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        async for name, data in events:
            if name == wanted:
                return data
    raise AssertionError(f"the stream ended before a {wanted!r} event")


async def test_events_follow_the_host(tmp_path: Path, fake_server_bin: Path) -> None:
    write_model_files(tmp_path, ["alpha"])
    profile = tmp_path / "p.yaml"
    profile.write_text(fake_profile(fake_server_bin, tmp_path / "state", {"alpha": ""}))
    async with running_service(profile, watch=False) as running:
        client = running.client
        async with client.stream("GET", "/api/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse(response)
            first = await next_event(events, "status")
            assert first["sidecars"] == [] and first["profiles"]["revision"]
            assert running.service.hub.clients == 1
            hello = [{"role": "user", "content": "x"}]
            body = {"model": "alpha", "max_tokens": 1, "messages": hello}
            chat = asyncio.create_task(client.post("/v1/chat/completions", json=body))
            started = await next_event(events, "pass")
            assert [a["action"] for a in started["actions"]] == ["start"]
            ready = await next_event(events, "sidecar")
            assert (ready["model"], ready["kind"]) == ("alpha", "ready")
            assert (await chat).status_code == 200
            await client.post("/api/unload", json={"model": "alpha"})
            stopped = await next_event(events, "sidecar")
            assert (stopped["model"], stopped["kind"]) == ("alpha", "stopped")
            status = await next_event(events, "status")
            assert all(row["state"] != "ready" for row in status["sidecars"])
            await client.post("/api/reload")
            reload = await next_event(events, "reload")
            assert (reload["trigger"], reload["result"]) == ("api", "unchanged")
        # the client left: its subscription goes with it
        await wait_for(lambda: running.service.hub.clients == 0, what="the stream to close")


def test_a_slow_client_loses_events_not_memory() -> None:
    subscription = Subscription(size=4)
    for seq in range(10):
        subscription.offer(Event(seq, "pass", {}))
    events, dropped = subscription.take()
    assert len(events) <= 4
    assert dropped + len(events) == 10
    assert subscription.take() == ([], 0)


def test_publishing_costs_nothing_without_clients() -> None:
    hub = EventHub(max_clients=1)
    built: list[int] = []

    def data() -> dict[str, Any]:
        built.append(1)
        return {}

    hub.publish("pass", data)
    assert built == []
    one = hub.subscribe()
    hub.publish("pass", data)
    assert built == [1]
    with pytest.raises(ApiError) as refused:
        hub.subscribe()
    assert refused.value.status == 503
    hub.unsubscribe(one)
    hub.subscribe()


def test_frames_are_server_sent_events() -> None:
    frame = Event(7, "reload", {"text": "a\nb"}).frame()
    assert frame == b'id: 7\nevent: reload\ndata: {"text":"a\\nb"}\n\n'
