"""Relaying a sidecar's response to the client as it arrives, and the state of one exchange."""

from __future__ import annotations

from time import perf_counter

from llamasup.proxy.asgi import DirectBody, Send
from llamasup.proxy.envelope import Dialect, stream_error_event
from llamasup.proxy.upstream import UpstreamError, UpstreamResponse

_SSE_HEADERS = ((b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))
_DROPPED_RESPONSE_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"server", b"date", b"trailer"}
)
_SSE_REPLACED = frozenset({b"cache-control", b"x-accel-buffering", b"content-length"})
#: an event stream with no event boundary for this long is relayed anyway
_MAX_HELD_BACK = 64 * 1024
#: what a response the sidecar broke after its head went out counts as: the client saw the
#: sidecar's status (200) and a cut body or an in-band error event, but the exchange failed
#: the way a sidecar that does not answer fails (502 ``upstream_unreachable``)
BROKEN_STATUS = 502


class UpstreamBrokeError(Exception):
    """The sidecar broke a non-streamed response after its head was sent: nothing to repair,
    so the client connection is dropped (the server closes it when this escapes)."""


class Exchange:
    """Mutable state of one forwarded request (what metrics and cancellation need)."""

    __slots__ = (
        "agent",
        "before",
        "client_gone",
        "dialect",
        "error",
        "finished",
        "key",
        "model",
        "observed",
        "response_started",
        "route",
        "started",
        "status",
        "streamed",
        "t0",
        "tail",
        "ttfb",
        "wait",
    )

    def __init__(self, route: str, dialect: Dialect, observed: bool) -> None:
        self.route = route
        self.dialect = dialect
        self.observed = observed
        #: timestamps are taken only when an observer will read them
        self.t0 = perf_counter() if observed else 0.0
        self.model = ""
        self.agent = ""
        self.status = 500
        self.ttfb: float | None = None
        self.wait = 0.0
        self.streamed = False
        self.error: str | None = None
        self.started = False
        self.response_started = False
        #: set before the last body message, so the disconnect watcher does not fire on it
        self.finished = False
        self.client_gone = False
        #: the sidecar that served it, and the last chunk of its answer (a reference, kept
        #: only when observed: the request log reads token counts from it)
        self.key = ""
        self.tail = b""
        #: the chunk before it (a stream's last one is often just ``data: [DONE]``)
        self.before = b""


async def relay(
    ex: Exchange,
    response: UpstreamResponse,
    send: Send,
    *,
    head_sent: bool = False,
    direct: DirectBody | None = None,
) -> None:
    """Send the sidecar's status, headers and body on, each chunk as soon as it arrives.

    ``head_sent``: a loading stream already answered 200 with an event stream; the sidecar's
    stream continues it, and anything else it answers becomes one in-band error event.
    ``direct``: the front's shortcut for an event stream's body (see :class:`DirectBody`).
    """
    if head_sent:
        await _continue_stream(ex, response, send, direct)
        return
    headers: list[tuple[bytes, bytes]] = []
    streamed = False
    for name, value in response.headers:
        lowered = name.lower()
        if lowered in _DROPPED_RESPONSE_HEADERS or lowered.startswith(b"access-control-"):
            continue  # CORS is llamasup's to grant (browser_gate), never the sidecar's
        if lowered == b"content-type" and value.startswith(b"text/event-stream"):
            streamed = True
        headers.append((lowered, value))
    if streamed:
        headers = [h for h in headers if h[0] not in _SSE_REPLACED]
        headers.extend(_SSE_HEADERS)
    ex.status = response.status
    ex.streamed = streamed
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    ex.response_started = True
    if streamed:
        await _relay_events(ex, response, send, direct)
        return
    while True:
        try:
            chunk = await response.read()
        except UpstreamError as exc:
            ex.status, ex.error = BROKEN_STATUS, "upstream_broke"
            raise UpstreamBrokeError(str(exc)) from exc
        last = response.complete
        if ex.ttfb is None and chunk and ex.observed:
            ex.ttfb = perf_counter() - ex.t0
        if last:
            ex.finished = True
        if ex.observed and chunk:
            ex.before, ex.tail = ex.tail, chunk
        await send({"type": "http.response.body", "body": chunk, "more_body": not last})
        if last:
            return


async def _continue_stream(
    ex: Exchange, response: UpstreamResponse, send: Send, direct: DirectBody | None
) -> None:
    streamed = any(
        name.lower() == b"content-type" and value.startswith(b"text/event-stream")
        for name, value in response.headers
    )
    if response.status == 200 and streamed:
        await _relay_events(ex, response, send, direct)
        return
    parts: list[bytes] = []
    try:
        while not response.complete:
            parts.append(await response.read())
    except UpstreamError:
        pass
    text = b"".join(parts)[:2000].decode("utf-8", "replace")
    ex.status = response.status
    ex.error = "upstream_error"
    ex.finished = True
    message = f"sidecar for {ex.model!r} answered {response.status}: {text}"
    event = stream_error_event(ex.dialect, message, "upstream_error")
    await send({"type": "http.response.body", "body": event, "more_body": False})


class _Events:
    """An event stream on its way through: cut at event boundaries, observed, and written
    straight to the client while the front's :class:`DirectBody` can take it.

    Holding back a trailing partial event (rarely more than a few bytes) is what lets a
    sidecar dying mid-stream end in a well-formed error event instead of a torn one.
    """

    __slots__ = ("direct", "ex", "held")

    def __init__(self, ex: Exchange, direct: DirectBody | None) -> None:
        self.ex = ex
        self.direct = direct
        self.held = b""

    def cut(self, chunk: bytes) -> bytes | None:
        """What was held plus ``chunk``, up to its last event boundary (the rest is held
        back); None when no event is complete yet."""
        held = self.held
        if held:
            chunk = held + chunk
            self.held = b""
        if chunk.endswith(b"\n\n"):
            return chunk
        cut = chunk.rfind(b"\n\n")
        if cut < 0 and b"\r\n\r\n" in chunk:
            cut = chunk.rfind(b"\r\n\r\n") + 2
        if cut < 0:
            if len(chunk) < _MAX_HELD_BACK:
                self.held = chunk
                return None
            return chunk
        self.held = chunk[cut + 2 :]
        return chunk[: cut + 2]

    def seen(self, chunk: bytes) -> None:
        ex = self.ex
        if ex.observed:
            if ex.ttfb is None:
                ex.ttfb = perf_counter() - ex.t0
            ex.before, ex.tail = ex.tail, chunk

    def take(self, body: bytes) -> bool:
        """The upstream connection's sink: relay ``body`` now, in its callback (no ASGI
        message, no task switch), or refuse it while the client cannot take it."""
        direct = self.direct
        if direct is None or not direct.writable():
            return False
        chunk = self.cut(body)
        if chunk is not None:
            self.seen(chunk)
            direct.write(chunk)
        return True


async def _relay_events(
    ex: Exchange, response: UpstreamResponse, send: Send, direct: DirectBody | None
) -> None:
    """Relay an event stream, each piece cut at an event boundary.

    With the front's :class:`DirectBody` the pieces go from the upstream connection's
    callback straight to the client's (``_Events.take``); this task then only wakes when
    the client's connection is paused (the pieces wait here and go through ``send``, which
    waits for it), at the end of the stream, or when the sidecar breaks it.
    """
    events = _Events(ex, direct)
    try:
        while True:
            if direct is not None:
                response.divert(events.take)
            try:
                chunk = await response.read()
            except UpstreamError as exc:
                ex.status, ex.error = BROKEN_STATUS, "upstream_disconnected"
                ex.finished = True
                event = stream_error_event(
                    ex.dialect,
                    f"sidecar for {ex.model!r} ended the stream early ({exc})",
                    "upstream_disconnected",
                )
                await send({"type": "http.response.body", "body": event, "more_body": False})
                return
            last = response.complete
            if last:
                chunk, events.held = events.held + chunk, b""
            else:
                piece = events.cut(chunk)
                if piece is None:
                    continue
                chunk = piece
            if chunk:
                events.seen(chunk)
            if last:
                ex.finished = True
            await send({"type": "http.response.body", "body": chunk, "more_body": not last})
            if last:
                return
    finally:
        if direct is not None:
            response.divert(None)
