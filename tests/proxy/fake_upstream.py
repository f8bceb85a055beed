"""A fast fake llama-server for the proxy's tests and benchmark (run as a script).

The runtime branch has the full fake llama-server; this one is deliberately tiny and fast
(asyncio + httptools, uvloop when present) so that in the benchmark the upstream costs as
little as possible and the proxy's own overhead is what gets measured.

    python fake_upstream.py [--host H] [--port P] [--alias NAME] [--load-delay S]
                            [--tokens N] [--delay S] [--rate TOKENS_PER_S] [--no-echo]

Prints ``listening on http://H:P`` on stdout once bound. ``/health`` answers 503 for
``--load-delay`` seconds, then 200. Inference routes echo what they received in ``x_fake``
(method, path, parsed body, headers); a JSON body may carry ``x_fake_ctl`` with ``tokens``,
``delay`` (seconds between stream events), ``rate`` (events per second),
``crash_after`` (SIGKILL itself after that many events), ``hold_after`` (stop after that many
events until ``POST /x-fake/release``) and ``content_type`` (of a streamed answer;
``text/event-stream`` unless told: another type makes it a plain chunked body).
``GET /x-fake/stats`` answers ``{"requests", "active", "cancelled"}``; cancelled counts
streams whose client left early.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import httptools

_STATUS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 503: b"Service Unavailable"}
_STREAM_ROUTES = {
    b"/v1/chat/completions",
    b"/v1/completions",
    b"/completion",
    b"/completions",
    b"/infill",
    b"/v1/responses",
    b"/v1/messages",
}


class Options:
    def __init__(self, ns: argparse.Namespace) -> None:
        self.alias: str = ns.alias
        self.tokens: int = ns.tokens
        self.delay: float = ns.delay
        self.rate: float = ns.rate
        self.echo: bool = not ns.no_echo
        self.ready_at = time.monotonic() + ns.load_delay


class Stats:
    requests = 0
    active = 0
    cancelled = 0
    #: set by ``POST /x-fake/release``: held streams (``hold_after``) go on, and from then
    #: on no stream of this process holds (one release per fake)
    released: asyncio.Event | None = None


def _released() -> asyncio.Event:
    if Stats.released is None:
        Stats.released = asyncio.Event()
    return Stats.released


class FakeProtocol(asyncio.Protocol):
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.task: asyncio.Task[None] | None = None
        self.streaming = False
        self.drain: asyncio.Future[None] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.respond(400, b'{"error":"bad request"}', close=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.streaming:
            Stats.cancelled += 1
            self.streaming = False
        if self.task is not None:
            self.task.cancel()
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)

    def pause_writing(self) -> None:
        self.drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)
        self.drain = None

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        raw = b"".join(self.body)
        self.handle(method, path, raw)

    # -- handling --------------------------------------------------------------------------
    def respond(self, status: int, body: bytes, *, close: bool = False) -> None:
        assert self.transport is not None
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json; charset=utf-8\r\n"
            b"content-length: %d\r\n" % (status, _STATUS.get(status, b"X"), len(body))
        )
        if close:
            head += b"connection: close\r\n"
        self.transport.write(head + b"\r\n" + body)
        if close:
            self.transport.close()

    def handle(self, method: bytes, path: bytes, raw: bytes) -> None:
        opts = self.opts
        if path == b"/health":
            if time.monotonic() < opts.ready_at:
                self.respond(503, b'{"error":{"message":"Loading model","code":503}}')
            else:
                self.respond(200, b'{"status":"ok"}')
            return
        if path == b"/x-fake/release":
            _released().set()
            self.respond(200, b"{}")
            return
        if path == b"/x-fake/stats":
            stats = {
                "requests": Stats.requests,
                "active": Stats.active,
                "cancelled": Stats.cancelled,
                "pid": os.getpid(),
            }
            self.respond(200, json.dumps(stats).encode())
            return
        if path in (b"/v1/models", b"/models"):
            listing = {"object": "list", "data": [{"id": opts.alias, "object": "model"}]}
            self.respond(200, json.dumps(listing).encode())
            return
        Stats.requests += 1
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        echo: dict[str, Any] = {
            "method": method.decode(),
            "path": self.url.decode(),
        }
        if opts.echo:
            echo["body"] = body
            echo["raw_len"] = len(raw)
            echo["headers"] = {k.decode().lower(): v.decode() for k, v in self.headers}
        ctl = body.get("x_fake_ctl", {}) if isinstance(body, dict) else {}
        tokens = int(ctl.get("tokens", opts.tokens))
        if isinstance(body, dict):
            for cap in ("max_tokens", "n_predict", "max_completion_tokens"):
                if isinstance(body.get(cap), int) and body[cap] >= 0:
                    tokens = min(tokens, body[cap])
        stream = isinstance(body, dict) and body.get("stream") is True
        if stream and path in _STREAM_ROUTES:
            self.task = asyncio.get_running_loop().create_task(self.stream(path, echo, tokens, ctl))
            return
        self.respond(200, json.dumps(_answer(path, opts.alias, echo, tokens)).encode())

    async def stream(
        self,
        path: bytes,
        echo: dict[str, Any],
        tokens: int,
        ctl: dict[str, Any],
    ) -> None:
        delay = float(ctl.get("delay", self.opts.delay))
        rate = float(ctl.get("rate", self.opts.rate))
        crash_after = ctl.get("crash_after")
        hold_after = ctl.get("hold_after")
        content_type = str(ctl.get("content_type", "text/event-stream")).encode()
        assert self.transport is not None
        transport = self.transport
        self.streaming = True
        Stats.active += 1
        try:
            transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\n"
                b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            events = _anthropic_events if path == b"/v1/messages" else _openai_events
            start = time.monotonic()
            for i, event in enumerate(events(self.opts.alias, echo, tokens)):
                if crash_after is not None and i >= int(crash_after):
                    os.kill(os.getpid(), signal.SIGKILL)
                if hold_after is not None and i == int(hold_after):
                    await _released().wait()
                if i and rate > 0:
                    # event loop timers tick in milliseconds: faster rates come in bursts
                    wait = start + i / rate - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(max(wait, 0.001))
                elif i and delay > 0:
                    await asyncio.sleep(delay)  # the fake's pacing, asked for by the test
                if self.lost:
                    return
                transport.write(b"%x\r\n%s\r\n" % (len(event), event))
                if self.drain is not None:
                    await self.drain
            transport.write(b"0\r\n\r\n")
            self.streaming = False
        finally:
            Stats.active -= 1
            self.task = None


def _answer(path: bytes, alias: str, echo: dict[str, Any], tokens: int) -> dict[str, Any]:
    text = "".join(f"t{i} " for i in range(tokens))
    if path == b"/v1/messages":
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": alias,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": tokens},
            "x_fake": echo,
        }
    if path == b"/v1/chat/completions":
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": alias,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "length",
                    "message": {"role": "assistant", "content": text},
                }
            ],
            "usage": _usage(tokens),
            "x_fake": echo,
        }
    if path in (b"/v1/completions", b"/completions"):
        return {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": 0,
            "model": alias,
            "choices": [{"index": 0, "text": text, "finish_reason": "length", "logprobs": None}],
            "usage": _usage(tokens),
            "x_fake": echo,
        }
    if path == b"/v1/embeddings":
        return {
            "object": "list",
            "model": alias,
            "x_fake": echo,
            "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 1.0]}],
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }
    return {"content": text, "model": alias, "x_fake": echo}


def _usage(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": 3 + tokens}


def _sse(obj: dict[str, Any], event: str | None = None) -> bytes:
    data = b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
    return data if event is None else b"event: " + event.encode() + b"\n" + data


def _openai_events(alias: str, echo: dict[str, Any], tokens: int) -> Any:
    chat = echo["path"].startswith("/v1/chat")
    for i in range(tokens):
        if chat:
            delta: dict[str, Any] = {"content": f"t{i} "}
            if i == 0:
                delta["role"] = "assistant"
            chunk: dict[str, Any] = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": alias,
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
        else:
            chunk = {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": 0,
                "model": alias,
                "choices": [
                    {"index": 0, "text": f"t{i} ", "finish_reason": None, "logprobs": None}
                ],
            }
        if i == 0:
            chunk["x_fake"] = echo
        yield _sse(chunk)
    yield b"data: [DONE]\n\n"


def _anthropic_events(alias: str, echo: dict[str, Any], tokens: int) -> Any:
    yield _sse(
        {
            "type": "message_start",
            "x_fake": echo,
            "message": {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": alias,
                "content": [],
                "stop_reason": None,
                "usage": {"input_tokens": 3, "output_tokens": 0},
            },
        },
        "message_start",
    )
    yield _sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        "content_block_start",
    )
    for i in range(tokens):
        yield _sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": f"t{i} "},
            },
            "content_block_delta",
        )
    yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    yield _sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": tokens},
        },
        "message_delta",
    )
    yield _sse({"type": "message_stop"}, "message_stop")


async def serve(ns: argparse.Namespace) -> None:
    opts = Options(ns)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FakeProtocol(opts), ns.host, ns.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://{ns.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--alias", default="fake-model")
    ap.add_argument("--load-delay", type=float, default=0.0)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--no-echo", action="store_true", help="echo only method and path")
    ns = ap.parse_args(argv)
    try:
        import uvloop  # noqa: PLC0415

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(ns))


if __name__ == "__main__":
    main(sys.argv[1:])
