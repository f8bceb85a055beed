"""HTTP side of the fake llama-server: routing, request parsing, streaming, scripted crashes."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

from llamasup.testing import fake_bodies as bodies
from llamasup.testing.fake_http import MiniHTTPHandler, MiniHTTPServer
from llamasup.testing.fake_state import FakeState

TYPE_CHECKING = False
if TYPE_CHECKING:
    # typing costs ~10 ms to import; the fake's start-up time matters more than style here
    from collections.abc import Callable
    from typing import ClassVar

    from llamasup.testing.fake_bodies import JsonObject

#: request headers echoed back in ``x_fake.headers`` so proxy tests can assert on them
ECHOED_HEADERS = ("authorization", "x-api-key", "x-agent", "x-request-id")

# like the real server, these answer without an API key
_PUBLIC_PATHS = frozenset({"/health", "/v1/health"})


class _ClientGone(Exception):
    """The client closed its connection before the response was complete."""


class FakeHTTPServer(MiniHTTPServer):
    def __init__(self, address: tuple[str, int], state: FakeState) -> None:
        self.state = state
        super().__init__(address, FakeHandler)


class FakeHandler(MiniHTTPHandler):
    ROUTES: ClassVar[dict[tuple[str, str], str]] = {
        ("GET", "/health"): "health",
        ("GET", "/v1/health"): "health",
        ("GET", "/models"): "models",
        ("GET", "/v1/models"): "models",
        ("GET", "/props"): "props",
        ("GET", "/metrics"): "metrics",
        ("POST", "/v1/chat/completions"): "chat",
        ("POST", "/chat/completions"): "chat",
        ("POST", "/v1/completions"): "completions",
        ("POST", "/completions"): "completions",
        ("POST", "/completion"): "native",
        ("POST", "/v1/messages"): "messages",
        ("POST", "/v1/embeddings"): "embeddings",
        ("POST", "/embeddings"): "embeddings",
        ("POST", "/tokenize"): "tokenize",
        ("POST", "/detokenize"): "detokenize",
    }

    @property
    def state(self) -> FakeState:
        server = self.server
        assert isinstance(server, FakeHTTPServer)
        return server.state

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- plumbing ---------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        state = self.state
        path = self.path.split("?", 1)[0]
        raw = self._read_body()
        if path == "/x-fake/stats":
            self._send_json(200, state.stats.snapshot())
            return
        if path == "/x-fake/health-probes":
            self._send_json(200, state.stats.health_probes())
            return
        if path in _PUBLIC_PATHS:
            state.stats.count_health(ready=state.ready.is_set())
        if state.behaviour.log_spam:
            state.log.spam(state.behaviour.log_spam)
        if state.options.api_keys and path not in _PUBLIC_PATHS and not self._authorized():
            self._send_json(401, bodies.error_body(401, "Invalid API Key", "authentication_error"))
            return
        if not state.ready.is_set():
            self._send_json(503, bodies.error_body(503, "Loading model", "unavailable_error"))
            return
        name = self.ROUTES.get((method, path))
        if name is None:
            self._send_json(404, bodies.error_body(404, "File Not Found", "not_found_error"))
            return
        body: JsonObject = {}
        if method == "POST":
            try:
                parsed = json.loads(raw or b"{}")
            except ValueError as exc:
                self._send_json(
                    400, bodies.error_body(400, f"invalid JSON: {exc}", "invalid_request_error")
                )
                return
            if not isinstance(parsed, dict):
                self._send_json(
                    400,
                    bodies.error_body(400, "body must be a JSON object", "invalid_request_error"),
                )
                return
            body = parsed
        handler: Callable[[str, JsonObject], None] = getattr(self, f"_route_{name}")
        handler(path, body)

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline(65536).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # skip optional trailers up to the blank line
                    while self.rfile.readline(65536).strip():
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        given = self.headers.get("authorization") or self.headers.get("x-api-key") or ""
        given = given.removeprefix("Bearer ")
        return given in self.state.options.api_keys

    def _send_bytes(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers(payload)

    def _send_json(self, status: int, payload: JsonObject) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        self._send_bytes(status, data, "application/json; charset=utf-8")

    def _client_gone(self) -> bool:
        """True once the peer has closed its side (an EOF is readable without a request).

        A non-blocking peek, not ``select``: ``select`` fails on descriptors past
        ``FD_SETSIZE`` (1024), which a benchmark holding many streams open reaches."""
        try:
            return bool(self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"")
        except BlockingIOError:
            return False  # nothing to read: still there
        except OSError:
            return True

    def _write_chunk(self, data: bytes) -> None:
        if self._client_gone():
            raise _ClientGone
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        except OSError as exc:
            raise _ClientGone from exc

    def _die(self, number: int) -> None:
        self.state.log.line("E", f"fake: crashing hard after inference request {number}")
        os.kill(os.getpid(), signal.SIGKILL)

    # --- inference --------------------------------------------------------------------------

    def _x_fake(self, path: str, body: JsonObject, number: int) -> JsonObject:
        headers = {name: self.headers[name] for name in ECHOED_HEADERS if name in self.headers}
        return {
            "pid": os.getpid(),
            "path": path,
            "number": number,
            "request": body,
            "headers": headers,
        }

    def _generation(
        self, path: str, body: JsonObject, number: int, prompt: str
    ) -> bodies.Generation:
        behaviour = self.state.behaviour
        limit = body.get("max_completion_tokens", body.get("max_tokens", body.get("n_predict")))
        reply = behaviour.reply_to(prompt)
        pieces = (
            tuple(f"t{index} " for index in range(behaviour.tokens))
            if reply is None
            else _pieces(reply)
        )
        finish = "stop"
        if isinstance(limit, int) and 0 <= limit < len(pieces):
            pieces, finish = pieces[:limit], "length"
        elif isinstance(limit, int) and limit == len(pieces) and reply is None:
            finish = "length"
        if behaviour.request_log:
            behaviour.log_request(os.getpid(), path, body)
        return bodies.Generation(
            ident=os.urandom(12).hex(),
            # the real server names itself here, whatever "model" the request asked for
            model=self.state.options.model_id,
            created=int(time.time()),
            prompt_tokens=len(bodies.tokenize(prompt)),
            pieces=pieces,
            finish_reason=finish,
            x_fake=self._x_fake(path, body, number),
            step_ms=behaviour.stream_delay * 1000.0,
        )

    def _infer(
        self,
        path: str,
        body: JsonObject,
        prompt: str,
        render: Callable[[bodies.Generation], JsonObject],
        render_stream: Callable[[bodies.Generation], list[bytes]],
    ) -> None:
        state = self.state
        behaviour = state.behaviour
        number = state.stats.begin()
        gen = self._generation(path, body, number, prompt)
        # the real server logs every task's start and end at its default verbosity
        state.log.slot("I", "launch_slot_", number - 1, "processing task")
        crash_after = behaviour.crash_after_requests
        crash = crash_after is not None and number >= crash_after
        cancelled = False
        try:
            if body.get("stream"):
                self._stream(render_stream(gen), number, crash and behaviour.crash_mid_stream)
            else:
                # a non-streaming answer takes as long as its stream would have
                for _ in gen.pieces:
                    if crash and behaviour.crash_mid_stream:
                        self._die(number)
                    if self._client_gone():
                        raise _ClientGone
                    time.sleep(behaviour.stream_delay)
                self._send_json(200, render(gen))
        except _ClientGone:
            cancelled = True
            self.close_connection = True
        finally:
            state.stats.end(
                prompt_tokens=gen.prompt_tokens,
                predicted_tokens=len(gen.pieces),
                cancelled=cancelled,
            )
            n_past = gen.prompt_tokens + len(gen.pieces)
            state.log.slot(
                "I", "release", number - 1, f"stop processing: n_past = {n_past}, truncated = 0"
            )
        if crash:
            self._die(number)

    def _stream(self, frames: list[bytes], number: int, crash_mid: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        cut = max(1, len(frames) // 2)
        for index, frame in enumerate(frames):
            if index:
                time.sleep(self.state.behaviour.stream_delay)
            if crash_mid and index == cut:
                self._die(number)
            self._write_chunk(frame)
        self._write_chunk(b"")  # the zero-length chunk ends the chunked body

    # --- routes -----------------------------------------------------------------------------

    def _bad_request(self, message: str) -> None:
        self._send_json(400, bodies.error_body(400, message, "invalid_request_error"))

    def _route_health(self, path: str, body: JsonObject) -> None:
        if self.state.health_failed():
            self._send_json(500, bodies.error_body(500, "fake health failure", "server_error"))
        else:
            self._send_json(200, {"status": "ok"})

    def _route_models(self, path: str, body: JsonObject) -> None:
        options = self.state.options
        self._send_json(
            200,
            bodies.models_response(
                options.model_id, list(options.aliases), options.model or "", self.state.created
            ),
        )

    def _route_props(self, path: str, body: JsonObject) -> None:
        options = self.state.options
        self._send_json(
            200,
            {
                "model_alias": options.model_id,
                "model_path": options.model,
                "total_slots": 4,
                "build_info": bodies.SYSTEM_FINGERPRINT,
                "default_generation_settings": {"n_ctx": 2048},
            },
        )

    def _route_metrics(self, path: str, body: JsonObject) -> None:
        state = self.state
        if not state.options.metrics:
            message = "This server does not support metrics endpoint. Start it with `--metrics`"
            self._send_json(501, bodies.error_body(501, message, "not_supported_error"))
            return
        with state.stats.lock:
            counters = {
                "prompt_tokens_total": float(state.stats.prompt_tokens),
                "tokens_predicted_total": float(state.stats.predicted_tokens),
                "n_decode_total": float(state.stats.requests),
            }
            gauges = {"requests_processing": float(state.stats.active), "requests_deferred": 0.0}
        text = bodies.metrics_text(counters, gauges)
        self._send_bytes(200, text.encode(), "text/plain; version=0.0.4")

    def _route_chat(self, path: str, body: JsonObject) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            self._bad_request("'messages' is required")
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self._infer(
            path,
            body,
            _text_of(messages),
            bodies.chat_response,
            lambda gen: bodies.chat_stream(gen, include_usage),
        )

    def _route_completions(self, path: str, body: JsonObject) -> None:
        if "prompt" not in body:
            self._bad_request("'prompt' is required")
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self._infer(
            path,
            body,
            _text_of(body["prompt"]),
            bodies.completion_response,
            lambda gen: bodies.completion_stream(gen, include_usage),
        )

    def _route_native(self, path: str, body: JsonObject) -> None:
        if "prompt" not in body:
            self._bad_request("'prompt' is required")
            return
        self._infer(
            path, body, _text_of(body["prompt"]), bodies.native_response, bodies.native_stream
        )

    def _route_messages(self, path: str, body: JsonObject) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            self._bad_request("'messages' is required")
            return
        prompt = _text_of(body.get("system", "")) + _text_of(messages)
        self._infer(path, body, prompt, bodies.messages_response, bodies.messages_stream)

    def _route_embeddings(self, path: str, body: JsonObject) -> None:
        state = self.state
        if not state.options.embeddings:
            message = "This server does not support embeddings. Start it with `--embeddings`"
            self._send_json(501, bodies.error_body(501, message, "not_supported_error"))
            return
        raw = body.get("input", body.get("content"))
        if raw is None:
            self._bad_request("'input' is required")
            return
        inputs = [_text_of(item) for item in raw] if isinstance(raw, list) else [_text_of(raw)]
        number = state.stats.begin()
        tokens = sum(len(bodies.tokenize(text)) for text in inputs)
        try:
            self._send_json(
                200,
                bodies.embeddings_response(
                    inputs,
                    state.options.model_id,
                    str(body.get("encoding_format") or "float"),
                    self._x_fake(path, body, number),
                ),
            )
        finally:
            state.stats.end(prompt_tokens=tokens, predicted_tokens=0, cancelled=False)

    def _route_tokenize(self, path: str, body: JsonObject) -> None:
        tokens = bodies.tokenize(_text_of(body.get("content", "")))
        if body.get("with_pieces"):
            pieces = [{"id": t, "piece": bodies.detokenize([t])} for t in tokens]
            self._send_json(200, {"tokens": pieces})
        else:
            self._send_json(200, {"tokens": tokens})

    def _route_detokenize(self, path: str, body: JsonObject) -> None:
        tokens = body.get("tokens", [])
        ids = [t for t in tokens if isinstance(t, int)] if isinstance(tokens, list) else []
        self._send_json(200, {"content": bodies.detokenize(ids)})


def _pieces(reply: str) -> tuple[str, ...]:
    """A scripted reply cut into word pieces (each keeps its trailing blank), like tokens."""
    pieces: list[str] = []
    for word in reply.split(" "):
        if pieces:
            pieces[-1] += " "
        pieces.append(word)
    return tuple(p for p in pieces if p)


def _text_of(value: object) -> str:
    """All the text inside a prompt, message list or content-part list, concatenated."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_text_of(item) for item in value)
    if isinstance(value, dict):
        return _text_of(value.get("content", value.get("text", "")))
    if isinstance(value, int):
        return bodies.detokenize([value])
    return ""
