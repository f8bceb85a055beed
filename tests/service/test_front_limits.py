"""The front under hostile or unlucky clients, over raw sockets: connection cap, request head
size and count, head, body and idle timeouts. Every refusal is llamasup's envelope and ends
the connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from service_helpers import RunningService, fake_profile, running_service, write_model_files

from llamasup.service.front_limits import MAX_HEAD_BYTES, MAX_HEADERS

pytestmark = pytest.mark.anyio

#: generous bound for anything a timeout of a fraction of a second should have done
DEADLINE = 15.0
HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@asynccontextmanager
async def front(tmp_path: Path, fake_bin: Path, server_extra: str) -> AsyncIterator[int]:
    """A running service with ``server_extra`` settings; yields its port."""
    root = tmp_path / "profiles"
    root.mkdir()
    write_model_files(tmp_path, ["alpha"])
    text = fake_profile(fake_bin, tmp_path / "state", {"alpha": ""}, server_extra=server_extra)
    (root / "p.yaml").write_text(text)
    async with running_service(root, watch=False) as running:
        yield port_of(running)


def port_of(running: RunningService) -> int:
    port = urlsplit(running.url).port
    assert port is not None
    return port


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (within DEADLINE)."""
    async with asyncio.timeout(DEADLINE):
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""


def parse(answer: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None


def assert_refusal(answer: bytes, status: int, code: str) -> dict[str, Any]:
    got, headers, body = parse(answer)
    assert got == status, answer[:300]
    assert answer.lower().count(b"\r\nconnection:") == 1, answer[:300]
    assert headers["connection"] == "close"
    assert headers["x-llamasup-error"] == "1"
    error: dict[str, Any] = body["error"]
    assert error["code"] == code
    return error


async def send_ignoring_reset(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Send ``data`` unless the server has already answered and closed."""
    try:
        writer.write(data)
        await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        pass


# --- request heads ------------------------------------------------------------------------------


async def test_a_header_that_never_ends_is_refused_431_before_it_is_buffered(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    async with front(tmp_path, fake_server_bin, "") as port:
        reader, writer = await connect(port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        chunk = b"a" * 65536
        sent = 0
        answered = asyncio.ensure_future(until_closed(reader))
        while not answered.done() and sent < 50 * 2**20:  # the 50 MB header of the report
            await send_ignoring_reset(writer, chunk)
            sent += len(chunk)
        answer = await answered
        writer.close()
        error = assert_refusal(answer, 431, "request_header_too_large")
        assert f"exceed {MAX_HEAD_BYTES} bytes" in error["message"]
        # refused long before the 50 MB were sent (socket buffers hold a few MB at most)
        assert sent < 16 * 2**20


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        # with Host and Connection: 100 fields, then 101
        ([f"X-H{i}: v" for i in range(MAX_HEADERS - 2)], False),
        ([f"X-H{i}: v" for i in range(MAX_HEADERS - 1)], True),
        ([f"X-Long{i}: {'v' * 1000}" for i in range(70)], True),  # 70 KB in 70 fields
    ],
    ids=["100-fields", "101-fields", "70KB-head"],
)
async def test_head_bounds_in_one_piece(
    tmp_path: Path, fake_server_bin: Path, extra: list[str], refused: bool
) -> None:
    async with front(tmp_path, fake_server_bin, "") as port:
        reader, writer = await connect(port)
        lines = ["GET /health HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *extra]
        await send_ignoring_reset(writer, ("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = await until_closed(reader)
        writer.close()
        if refused:
            assert_refusal(answer, 431, "request_header_too_large")
        else:
            assert parse(answer)[0] == 200


# --- timeouts -----------------------------------------------------------------------------------


async def test_silent_slow_and_idle_connections_are_closed(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    timeouts = "client_timeouts: {idle: 300ms, head: 500ms, body: 60s}"
    async with front(tmp_path, fake_server_bin, timeouts) as port:
        loop = asyncio.get_running_loop()
        # connects and sends nothing: closed without a word
        silent, silent_writer = await connect(port)
        started = loop.time()
        assert await until_closed(silent) == b""
        assert loop.time() - started >= 0.4
        # a head that trickles in: 408 when its time is up
        slow, slow_writer = await connect(port)
        slow_writer.write(b"GET /health HTTP/1.1\r\nHo")
        error = assert_refusal(await until_closed(slow), 408, "request_timeout")
        assert "server.client_timeouts.head" in error["message"]
        # kept alive after a request, then idle: closed
        idle, idle_writer = await connect(port)
        idle_writer.write(HEALTH)
        answer = await until_closed(idle)
        assert answer.startswith(b"HTTP/1.1 200 ")
        # a kept-alive connection whose next head stalls gets the 408 too
        again, again_writer = await connect(port)
        again_writer.write(HEALTH + b"GET /health HTTP/1.1\r\n")
        answer = await until_closed(again)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert b"HTTP/1.1 408 " in answer
        for writer in (silent_writer, slow_writer, idle_writer, again_writer):
            writer.close()


@pytest.mark.parametrize(
    ("path", "envelope"),
    [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic"), ("/api/unload", "api")],
)
async def test_a_stalled_body_is_answered_408_and_the_connection_closed(
    tmp_path: Path, fake_server_bin: Path, path: str, envelope: str
) -> None:
    timeouts = "client_timeouts: {body: 300ms}"
    async with front(tmp_path, fake_server_bin, timeouts) as port:
        reader, writer = await connect(port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n"
        )
        writer.write(head.encode() + b'{"model": "alpha", ')
        answer = await until_closed(reader)
        writer.close()
        status, headers, body = parse(answer)
        assert (status, headers["connection"], headers["x-llamasup-error"]) == (408, "close", "1")
        error = body["error"]
        assert error["code"] == "request_timeout"
        assert "server.client_timeouts.body" in error["message"]
        if envelope == "anthropic":
            assert body["type"] == "error"


# --- connections --------------------------------------------------------------------------------


async def test_connections_past_the_cap_are_refused_503_and_closed(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    async with front(tmp_path, fake_server_bin, "max_connections: 3") as port:
        held = [await connect(port) for _ in range(3)]
        # the cap counts connections, idle or not: a fourth one is refused at its request
        reader, writer = await connect(port)
        writer.write(HEALTH)
        answer = await until_closed(reader)
        writer.close()
        error = assert_refusal(answer, 503, "too_many_connections")
        assert "server.max_connections" in error["message"]
        assert parse(answer)[1]["retry-after"] == "1"
        # one past the cap that says nothing is closed quickly, not held
        silent, silent_writer = await connect(port)
        assert await until_closed(silent) == b""
        silent_writer.close()
        for _, held_writer in held:
            held_writer.close()
            await held_writer.wait_closed()

        async def health_ok() -> bool:
            reader, writer = await connect(port)
            writer.write(HEALTH.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            answer = await until_closed(reader)
            writer.close()
            return answer.startswith(b"HTTP/1.1 200 ")

        # the server notices the closed ones as it reads them: poll with a deadline
        async with asyncio.timeout(DEADLINE):
            while not await health_ok():
                await asyncio.sleep(0.05)
