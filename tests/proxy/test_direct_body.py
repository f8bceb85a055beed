"""A streamed body relayed from the upstream connection's callback (``DirectBody``).

Behind llamasup's front an event stream's pieces skip the ASGI message per piece; these tests
hold it to the same contract as the ASGI path: every byte, in order, cut at event boundaries,
and a client that cannot keep up is waited for (never buffered without bound, never skipped).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from typing import Any

import pytest

from llamasup.proxy.asgi import ASGIApp, Message, Receive, Scope, Send
from llamasup.proxy.envelope import Dialect
from llamasup.proxy.relay import Exchange, relay
from llamasup.proxy.upstream import UpstreamClient, UpstreamResponse, _Connection
from llamasup.service.front_direct import CycleBody
from llamasup.testing.poll import poll_until
from proxy.proxy_profiles import ProxyFactory


class BodyMessages:
    """Middleware counting the ASGI body messages of each response (the slow path)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def counting(scope: Scope, receive: Receive, send: Send) -> None:
            async def counted(message: Message) -> None:
                if message["type"] == "http.response.body":
                    self.counts[scope["path"]] += 1
                await send(message)

            await app(scope, receive, counted)

        return counting


def chat(tokens: int, delay: float) -> bytes:
    return json.dumps(
        {
            "model": "alpha",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            "x_fake_ctl": {"tokens": tokens, "delay": delay},
        }
    ).encode()


def raw_request(port: int, body: bytes, *, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    return sock


def read_chunked(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one chunked response, read to its last chunk."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    body = bytearray()
    while True:
        while b"\r\n" not in rest:
            rest += sock.recv(65536)
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(rest) < size + 2:
            more = sock.recv(65536)
            assert more, "connection closed mid-chunk"
            rest += more
        if size == 0:
            return head, bytes(body)
        body += rest[:size]
        rest = rest[size + 2 :]


def contents(body: bytes) -> list[str]:
    """The content deltas of an OpenAI event stream, checking every event is whole JSON."""
    out = []
    events = body.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    for event in events[:-2]:
        assert event.startswith(b"data: "), event[:80]
        payload = json.loads(event[6:])
        delta = payload["choices"][0]["delta"]
        if delta.get("content"):
            out.append(delta["content"])
    return out


def test_a_stream_behind_llamasup_front_is_not_an_asgi_message_per_event(
    make_proxy: ProxyFactory,
) -> None:
    bodies: dict[str, bytes] = {}
    counts: dict[str, int] = {}
    for front in ("llamasup", "plain"):
        messages = BodyMessages()
        proxy = make_proxy(front=front, wrap=messages.wrap)
        with raw_request(proxy.port, chat(40, 0.01)) as sock:
            head, bodies[front] = read_chunked(sock)
        assert head.startswith(b"HTTP/1.1 200")
        counts[front] = messages.counts["/v1/chat/completions"]
    assert contents(bodies["llamasup"]) == [f"t{i} " for i in range(40)]
    assert contents(bodies["plain"]) == contents(bodies["llamasup"])
    # the ASGI path sends a message for every read that holds whole events (about one per
    # event, fewer when a loaded machine lets several arrive in one read); the shortcut sends
    # only the end of the stream
    assert counts["plain"] >= 10
    assert counts["llamasup"] <= 2


def test_a_client_that_stops_reading_is_waited_for_and_loses_nothing(
    make_proxy: ProxyFactory,
) -> None:
    messages = BodyMessages()
    proxy = make_proxy(wrap=messages.wrap)
    tokens = 20_000  # some 3 MB of events: more than the kernel's and uvloop's buffers hold
    with raw_request(proxy.port, chat(tokens, 0), rcvbuf=4096) as sock:
        # the client reads nothing: the front's write buffer fills, the shortcut refuses and
        # the relay goes through send, which waits for the client
        poll_until(
            lambda: messages.counts["/v1/chat/completions"] >= 1,
            timeout=30,
            what="the relay falling back to send for a paused client",
        )
        head, body = read_chunked(sock)
    assert head.startswith(b"HTTP/1.1 200")
    assert contents(body) == [f"t{i} " for i in range(tokens)]


# -- the relay's two paths meeting, piece by piece ----------------------------------------


class Transport:
    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Direct:
    """A DirectBody whose client a test pauses and resumes."""

    def __init__(self) -> None:
        self.open = True
        self.written: list[bytes] = []

    def writable(self) -> bool:
        return self.open

    def write(self, data: bytes) -> None:
        assert self.open
        self.written.append(data)


@pytest.mark.parametrize("split", [1, 7, 64])
def test_direct_and_send_pieces_add_up_to_the_stream_cut_at_boundaries(split: int) -> None:
    events = [b'data: {"n": %d, "pad": "%s"}\n\n' % (i, b"x" * (i % 13)) for i in range(60)]
    events.append(b"data: [DONE]\n\n")
    stream = b"".join(events)
    pieces = [stream[i : i + split] for i in range(0, len(stream), split)]

    async def run() -> tuple[list[tuple[str, bytes]], Direct]:
        conn = _Connection(("127.0.0.1", 1))
        conn.connection_made(Transport())  # type: ignore[arg-type]
        head_future = conn.start(b"", head_only=False)
        conn.data_received(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        await head_future
        response = UpstreamResponse(UpstreamClient(), conn)
        direct = Direct()
        order: list[tuple[str, bytes]] = []
        original_write = direct.write

        def write(data: bytes) -> None:
            original_write(data)
            order.append(("direct", data))

        direct.write = write  # type: ignore[method-assign]

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body":
                order.append(("send", message["body"]))

        ex = Exchange("/v1/chat/completions", Dialect.OPENAI, True)
        task = asyncio.ensure_future(relay(ex, response, send, direct=direct))
        await asyncio.sleep(0)
        for n, piece in enumerate(pieces):
            # the client pauses for a stretch now and then; the relay must neither lose
            # nor reorder what arrives meanwhile
            direct.open = (n // 5) % 3 != 1
            conn.data_received(b"%x\r\n%b\r\n" % (len(piece), piece))
            await asyncio.sleep(0)
        direct.open = True
        conn.data_received(b"0\r\n\r\n")
        await asyncio.wait_for(task, 5)
        assert ex.finished and ex.tail.endswith(b"\n\n")
        return order, direct

    order, direct = asyncio.run(run())
    assert b"".join(data for _, data in order) == stream
    for _, data in order[:-1]:
        assert data.endswith(b"\n\n")  # each piece ends at an event boundary
    assert {path for path, _ in order} == {"direct", "send"}
    assert direct.written  # the shortcut carried part of it


def test_the_shortcut_is_offered_only_while_send_would_just_write() -> None:
    class Flow:
        write_paused = False

    class Cycle:
        def __init__(self) -> None:
            self.response_started = True
            self.response_complete = False
            self.disconnected = False
            self.chunked_encoding: bool | None = True
            self.flow = Flow()
            self.scope: dict[str, Any] = {"method": "POST"}
            self.written: list[bytes] = []
            self.transport = self
            self.closing = False

        def write(self, data: bytes) -> None:
            self.written.append(data)

        def is_closing(self) -> bool:
            return self.closing

    cycle = Cycle()
    body = CycleBody()
    assert not body.writable()  # no cycle yet
    body.cycle = cycle  # type: ignore[assignment]
    assert body.writable()
    body.write(b"data: 1\n\n")
    assert cycle.written == [b"9\r\ndata: 1\n\n\r\n"]  # framed as uvicorn's send frames it
    for attribute, value in (
        ("response_started", False),
        ("response_complete", True),
        ("disconnected", True),
        ("chunked_encoding", False),
    ):
        setattr(cycle, attribute, value)
        assert not body.writable(), attribute
        setattr(cycle, attribute, not value if isinstance(value, bool) else value)
    cycle.chunked_encoding = True
    assert body.writable()
    cycle.flow.write_paused = True
    assert not body.writable()
    cycle.flow.write_paused = False
    cycle.transport.closing = True
    assert not body.writable()
    cycle.transport.closing = False
    cycle.scope["method"] = "HEAD"
    assert not body.writable()
