"""``GET /api/events``: what happens on the host, as server-sent events (the dashboard, ``status
-w``).

Publishers are the listeners llamasup already has (a reconcile pass, a profile reload, a
sidecar event of the supervisor); none is on the inference path, and each publish is a
constant-time append per connected client, skipped entirely when none is connected. Status
documents are built by each client's own task, never by a publisher.

Each client has a bounded queue (:data:`QUEUE_SIZE` events). A client too slow to keep up
loses the queued events instead of holding memory or slowing anyone: it gets a ``lagged``
event (how many were dropped) and a fresh ``status``, which is all a reader needs to catch
up. At most :data:`MAX_CLIENTS` streams are open at once; the next gets 503.

Events (``event:`` name, JSON ``data:``, increasing ``id:``):

* ``status``: the ``GET /api/status`` document, at once, then after any other event (at most
  every :data:`MIN_STATUS_GAP` s) and at least every :data:`STATUS_EVERY` s (uptime, requests
  in flight), every :data:`LOADING_EVERY` s while a sidecar loads;
* ``sidecar``: ``{key, model, kind, state}`` when a sidecar becomes ready, fails, exits,
  stops or is refused a start;
* ``pass``: a reconcile pass that did something (the shape of ``reconciler.recent[]``);
* ``reload``: a profile reload or apply (the shape of ``profiles.last_reload``);
* ``progress``: ``{key, model, line}``, a loading sidecar's new progress line;
* ``lagged``: ``{dropped}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llamasup.profiles.store import ReloadResult
from llamasup.proxy.asgi import Receive, Send
from llamasup.reconcile.history import PassRecord
from llamasup.service.api_errors import ApiError
from llamasup.sidecars.supervisor import SupervisorEvent

MAX_CLIENTS = 32
QUEUE_SIZE = 256
STATUS_EVERY = 2.0
LOADING_EVERY = 0.5
MIN_STATUS_GAP = 0.2
RETRY_MS = 2000


@dataclass(frozen=True)
class Event:
    seq: int
    kind: str
    data: dict[str, Any]

    def frame(self) -> bytes:
        payload = json.dumps(self.data, ensure_ascii=False, separators=(",", ":"))
        return f"id: {self.seq}\nevent: {self.kind}\ndata: {payload}\n\n".encode()


class Subscription:
    """One client's queue; ``offer`` never blocks and never grows past ``size``."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._queue: deque[Event] = deque()
        self._wake = asyncio.Event()
        self.dropped = 0

    def wake(self) -> None:
        self._wake.set()

    def offer(self, event: Event) -> None:
        if len(self._queue) >= self._size:
            # behind by a whole queue: what it missed is summed up by the next status
            self.dropped += len(self._queue) + 1
            self._queue.clear()
        else:
            self._queue.append(event)
        self._wake.set()

    def take(self) -> tuple[list[Event], int]:
        """Queued events and how many were dropped since the last take."""
        events = list(self._queue)
        self._queue.clear()
        dropped, self.dropped = self.dropped, 0
        self._wake.clear()
        return events, dropped

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - the caller's tick
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()


class EventHub:
    def __init__(self, *, max_clients: int = MAX_CLIENTS, queue_size: int = QUEUE_SIZE) -> None:
        self._max = max_clients
        self._queue_size = queue_size
        self._subscribers: list[Subscription] = []
        self._seq = 0
        #: set at shutdown: every stream ends (an open dashboard must not hold the front up)
        self.closed = False

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def publish(self, kind: str, data: Callable[[], dict[str, Any]]) -> None:
        """Offer an event to every client; ``data`` is built only when one is connected."""
        if not self._subscribers:
            return
        event = Event(self.next_seq(), kind, data())
        for subscriber in self._subscribers:
            subscriber.offer(event)

    def subscribe(self) -> Subscription:
        if len(self._subscribers) >= self._max:
            raise ApiError(
                503,
                "too_many_streams",
                f"{self._max} event streams are open already; close one",
                headers=[(b"retry-after", b"5")],
            )
        subscription = Subscription(self._queue_size)
        self._subscribers.append(subscription)
        return subscription

    def close(self) -> None:
        self.closed = True
        for subscriber in self._subscribers:
            subscriber.wake()

    def reopen(self) -> None:
        """After a restart that did not happen: new streams may open again."""
        self.closed = False

    def unsubscribe(self, subscription: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(subscription)

    # -- the listeners that feed it -----------------------------------------------------------

    def on_pass(self, record: PassRecord) -> None:
        if record.plan.actions or record.error:
            self.publish("pass", record.as_dict)

    def on_reload(self, result: ReloadResult) -> None:
        self.publish("reload", result.as_dict)

    def on_sidecar(self, event: SupervisorEvent) -> None:
        self.publish(
            "sidecar",
            lambda: {
                "key": event.key,
                "model": event.status.model,
                "kind": str(event.kind),
                "state": str(event.status.state),
            },
        )


async def stream_events(
    hub: EventHub, status: Callable[[], dict[str, Any]], receive: Receive, send: Send
) -> None:
    """Serve one client until it leaves (see the module docstring)."""
    if hub.closed:
        raise ApiError(503, "shutting_down", "llamasup is shutting down")
    subscription = hub.subscribe()
    gone = asyncio.create_task(_disconnected(receive))
    gone.add_done_callback(lambda _task: subscription.wake())
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        await _send(send, f"retry: {RETRY_MS}\n\n".encode())
        await _pump(hub, subscription, status, gone, send)
        if not gone.done():
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        hub.unsubscribe(subscription)
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone


async def _pump(
    hub: EventHub,
    subscription: Subscription,
    status: Callable[[], dict[str, Any]],
    gone: asyncio.Task[None],
    send: Send,
) -> None:
    progress: dict[str, str | None] = {}
    last_status = -1.0
    dirty = True
    while not gone.done() and not hub.closed:
        events, dropped = subscription.take()
        frames = [event.frame() for event in events]
        if dropped:
            frames.append(Event(hub.next_seq(), "lagged", {"dropped": dropped}).frame())
        dirty = dirty or bool(events) or bool(dropped)
        now = time.monotonic()
        loading = any(value is not None for value in progress.values())
        every = LOADING_EVERY if loading else STATUS_EVERY
        if (dirty and now - last_status >= MIN_STATUS_GAP) or now - last_status >= every:
            document = status()
            frames += [
                Event(hub.next_seq(), "progress", data).frame()
                for data in _new_progress(progress, document)
            ]
            frames.append(Event(hub.next_seq(), "status", document).frame())
            last_status, dirty = now, False
        if frames:
            await _send(send, b"".join(frames))
        loading = any(value is not None for value in progress.values())
        every = LOADING_EVERY if loading else STATUS_EVERY
        wait = every - (time.monotonic() - last_status)
        if dirty:
            wait = min(wait, MIN_STATUS_GAP - (time.monotonic() - last_status))
        await subscription.wait(max(wait, 0.0))


def _new_progress(seen: dict[str, str | None], document: dict[str, Any]) -> list[dict[str, Any]]:
    """``progress`` events for loading sidecars whose last line changed; ``seen`` updated."""
    events: list[dict[str, Any]] = []
    current: dict[str, str | None] = {}
    for row in document.get("sidecars", []):
        line = row.get("progress")
        current[row["key"]] = line
        if line is not None and seen.get(row["key"]) != line:
            events.append({"key": row["key"], "model": row["model"], "line": line})
    seen.clear()
    seen.update(current)
    return events


async def _send(send: Send, body: bytes) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
