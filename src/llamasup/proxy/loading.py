"""Progress while a sidecar loads, sent as the start of a chat stream (llama-swap's
``sendLoadingState``), so a client sees bytes at once instead of timing out on a silent model.

Opt-in per model (``send_loading_state: true``, or ``server.send_loading_state``) and per
request (``X-Llamasup-Loading-State: 1``, or ``0`` to decline). It applies to streamed
``/v1/chat/completions`` requests only: the response starts (200, event stream) right away,
progress arrives as ``reasoning_content`` deltas (what chat UIs show as thinking, apart from
the answer) — the sidecar's latest log line whenever it changes, a dot otherwise — and then
the model's own stream follows on the same response. A failure to load ends it with an
in-band error event, since the status line has been sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from llamasup.proxy.asgi import Send

HEADER_LOADING_STATE = b"x-llamasup-loading-state"
LOADING_PATH = "/v1/chat/completions"
TICK = 0.75
_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def wants_loading_state(path: str, stream: object, header: str | None, model_default: bool) -> bool:
    """Whether this request gets progress while its sidecar loads."""
    if path != LOADING_PATH or stream is not True:
        return False
    if header is not None:
        return header.strip().lower() in ("1", "true", "yes", "on")
    return model_default


class LoadingStream:
    def __init__(
        self, send: Send, model: str, progress: Callable[[], str | None], tick: float = TICK
    ) -> None:
        self._send = send
        self._model = model
        self._progress = progress
        self._tick = tick
        self._began = time.monotonic()
        self._last: str | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def begin(self) -> None:
        """Send the response head and the first line, then keep reporting until ``end``."""
        await self._send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await self._chunk(f"llamasup: loading model {self._model}\n")
        self._ticker = asyncio.create_task(self._run(), name=f"loading-{self._model}")

    async def end(self, ready: bool) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.wait({self._ticker})  # never raises: our own cancellation stays ours
        if ready:
            await self._chunk(f"\nready ({time.monotonic() - self._began:.1f}s)\n\n")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick)  # the report's own pace, not a wait for anything
            line = self._progress()
            if line and line != self._last:
                self._last = line
                await self._chunk(f"\n{line.strip()[:200]} ")
            else:
                await self._chunk(".")

    async def _chunk(self, text: str) -> None:
        payload = {
            "id": "llamasup-loading",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self._model,
            "choices": [{"index": 0, "delta": {"reasoning_content": text}, "finish_reason": None}],
        }
        body = b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"
        await self._send({"type": "http.response.body", "body": body, "more_body": True})
