"""Progress while a sidecar loads (llama-swap's sendLoadingState), against fake sidecars that
load slowly: the stream starts at once, shows progress as reasoning_content, then the model's
own stream follows; without the opt-in nothing changes; a failed load ends in-band."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from service_helpers import running_service

from .test_reconciler_service import writer_for

pytestmark = pytest.mark.anyio

SLOW_LOAD = "env:\n  FAKE_LLAMA_LOAD_DELAY: '1.5'\n  FAKE_LLAMA_PROGRESS_INTERVAL: '0.1'"
BODY = {"model": "alpha", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


async def _events(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> tuple[list[dict[str, object]], float]:
    """The stream's JSON events, and when the first one arrived (seconds after sending)."""
    events: list[dict[str, object]] = []
    first: float | None = None
    began = time.monotonic()
    async with client.stream("POST", "/v1/chat/completions", json=BODY, headers=headers) as reply:
        assert reply.status_code == 200
        async for line in reply.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                first = first if first is not None else time.monotonic() - began
                events.append(json.loads(line.removeprefix("data: ")))
    assert first is not None
    return events, first


def _reasoning(events: list[dict[str, object]]) -> str:
    text = ""
    for event in events:
        choices = event.get("choices")
        if isinstance(choices, list) and choices:
            delta = choices[0].get("delta", {})
            text += delta.get("reasoning_content") or ""
    return text


async def test_a_loading_model_streams_progress_then_its_answer(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = writer_for(tmp_path, fake_server_bin)
    writer.write({"alpha": SLOW_LOAD})
    async with running_service(writer.target.parent) as running:
        events, first = await _events(running.client, {"x-llamasup-loading-state": "1"})
        progress = _reasoning(events)
        assert progress.startswith("llamasup: loading model alpha")
        assert "ready (" in progress
        assert first < 1.0, "progress began before the model was ready"
        answer = [e for e in events if e.get("id") != "llamasup-loading"]
        assert answer, "the model's own stream followed"
        assert all("reasoning_content" not in str(e) for e in answer)


async def test_without_the_opt_in_a_loading_model_is_silent_until_ready(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = writer_for(tmp_path, fake_server_bin)
    writer.write({"alpha": SLOW_LOAD + "\nsend_loading_state: true"})
    async with running_service(writer.target.parent) as running:
        # the model opts in; this request declines
        events, first = await _events(running.client, {"x-llamasup-loading-state": "0"})
        assert _reasoning(events) == ""
        assert first >= 1.0


async def test_a_failed_load_ends_the_started_stream_with_an_error_event(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = writer_for(tmp_path, fake_server_bin, "restart: {max_failures: 1}")
    writer.write({"alpha": "send_loading_state: true\nenv:\n  FAKE_LLAMA_CRASH_AT_START: '3'"})
    async with running_service(writer.target.parent) as running:
        events, _ = await _events(running.client, {})
        assert _reasoning(events).startswith("llamasup: loading model alpha")
        error = events[-1].get("error")
        assert isinstance(error, dict) and error["code"] == "sidecar_unavailable"
