"""The lean upstream client against scripted servers on real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from llamasup.proxy.upstream import UpstreamClient, UpstreamError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """An asyncio server answering each request with ``respond(request_head)``."""

    def __init__(
        self,
        respond: Callable[[bytes], bytes],
        *,
        close_after: bool = False,
        drop_second: bool = False,
    ) -> None:
        self.respond = respond
        self.close_after = close_after
        self.drop_second = drop_second
        self.connections = 0
        self.heads: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.heads.append(head + body)
                served += 1
                if self.drop_second and served == 2:
                    break  # read the request, then close: as if closing an idle connection
                writer.write(self.respond(head))
                await writer.drain()
                if self.close_after:  # without saying so: the next request finds it closed
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> int:
        self._server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()


def ok(body: bytes = b"hello") -> Callable[[bytes], bytes]:
    return lambda _: b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def test_keep_alive_reuses_one_connection() -> None:
    async def run() -> None:
        server = Server(ok())
        client = UpstreamClient()
        async with server as port:
            for _ in range(5):
                response = await client.request(
                    "POST", "127.0.0.1", port, b"/x", headers=[(b"x-a", b"1")], body=b"{}"
                )
                assert response.status == 200 and await response.body() == b"hello"
                response.release()
        assert server.connections == 1
        assert server.heads[0].startswith(b"POST /x HTTP/1.1\r\nhost: 127.0.0.1:")
        assert b"x-a: 1\r\n" in server.heads[0] and b"content-length: 2\r\n" in server.heads[0]
        await client.aclose()

    asyncio.run(run())


def test_idle_connection_closed_by_the_sidecar_is_retried_once() -> None:
    async def run() -> None:
        server = Server(ok(), drop_second=True)
        client = UpstreamClient()
        async with server as port:
            for _ in range(3):
                response = await client.request("POST", "127.0.0.1", port, b"/", body=b"x")
                assert await response.body() == b"hello"
                response.release()
        # requests 2 and 3 each met a reused connection closed without an answer, and went
        # out again on a new one
        assert server.connections == 3
        assert len(server.heads) == 5

    asyncio.run(run())


def test_chunked_and_read_until_eof_bodies() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    until_eof = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it"

    async def run() -> None:
        client = UpstreamClient()
        async with Server(lambda _: chunked) as port:
            response = await client.request("GET", "127.0.0.1", port, b"/")
            assert await response.body() == b"abcde"
            response.release()
            assert client.idle_connections("127.0.0.1", port) == 1
        async with Server(lambda _: until_eof, close_after=True) as port:
            response = await client.request("GET", "127.0.0.1", port, b"/")
            assert await response.body() == b"all of it"
            response.release()
            assert client.idle_connections("127.0.0.1", port) == 0

    asyncio.run(run())


def test_head_response_has_no_body() -> None:
    async def run() -> None:
        client = UpstreamClient()
        server = Server(lambda _: b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n")
        async with server as port:
            response = await client.request("HEAD", "127.0.0.1", port, b"/")
            assert response.status == 200 and await response.body() == b""
            response.release()

    asyncio.run(run())


def test_errors() -> None:
    async def run() -> None:
        client = UpstreamClient(connect_timeout=2)
        async with Server(ok()) as port:
            pass
        with pytest.raises(UpstreamError) as refused:
            await client.request("GET", "127.0.0.1", port, b"/")
        assert not refused.value.response_started
        torn = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this"
        async with Server(lambda _: torn, close_after=True) as port:
            response = await client.request("GET", "127.0.0.1", port, b"/")
            assert await response.read() == b"only this"
            with pytest.raises(UpstreamError) as broken:
                await response.read()
            assert broken.value.response_started
            response.release()
        async with Server(lambda _: b"NOT HTTP\r\n\r\n") as port:
            with pytest.raises(UpstreamError):
                await client.request("GET", "127.0.0.1", port, b"/")

    asyncio.run(run())


def test_slow_reader_pauses_the_sidecar_and_gets_everything() -> None:
    big = bytes(range(256)) * 40_000  # 10 MB, far above the high-water mark

    async def run() -> None:
        client = UpstreamClient()
        async with Server(ok(big)) as port:
            response = await client.request("GET", "127.0.0.1", port, b"/")
            received = bytearray()
            while chunk := await response.read():
                received += chunk
                await asyncio.sleep(0.001)  # pacing: a slow reader is the point
            assert received == big
            response.release()

    asyncio.run(run())


def test_release_mid_body_closes_the_connection() -> None:
    async def run() -> None:
        client = UpstreamClient()
        partial = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nsome"
        async with Server(lambda _: partial) as port:
            response = await client.request("GET", "127.0.0.1", port, b"/")
            assert await response.read() == b"some"
            response.release()  # before the end: must not be reused
            assert client.idle_connections("127.0.0.1", port) == 0

    asyncio.run(run())


class ThreadPoolServer:
    """A server like cpp-httplib in llama-server: ``threads`` workers, each serving one
    connection until it closes (kept alive); a connection past them is not served until a
    worker is free. Counts connections that had to wait for a worker."""

    def __init__(self, threads: int) -> None:
        self.workers = asyncio.Semaphore(threads)
        self.waited = 0
        self.most_open = 0
        self.open = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        if self.workers.locked():
            self.waited += 1
        try:
            async with self.workers:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


@pytest.mark.parametrize("limit", [1, 3])
def test_connections_to_a_sidecar_stay_within_its_http_threads(limit: int) -> None:
    async def run() -> None:
        server = ThreadPoolServer(threads=limit)
        client = UpstreamClient()
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]

        async def one() -> bytes:
            response = await client.request("GET", "127.0.0.1", port, b"/", max_connections=limit)
            try:
                return await response.body()
            finally:
                response.release()

        # 16 at once, twice: without the cap, the connections past the workers would wait
        # for a worker that the reused connections never free
        for _ in range(2):
            bodies = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(16))), 10)
            assert bodies == [b"ok"] * 16
        assert server.waited == 0
        assert server.most_open <= limit
        assert client.open_connections("127.0.0.1", port) <= limit
        await client.aclose()
        assert client.open_connections("127.0.0.1", port) == 0
        listener.close()

    asyncio.run(run())


def test_a_request_waiting_for_a_connection_can_be_cancelled() -> None:
    async def run() -> None:
        server = ThreadPoolServer(threads=1)
        client = UpstreamClient()
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        held = await client.request("GET", "127.0.0.1", port, b"/", max_connections=1)
        waiting = asyncio.create_task(
            client.request("GET", "127.0.0.1", port, b"/", max_connections=1)
        )
        await asyncio.sleep(0)  # let it start waiting
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await held.body() == b"ok"
        held.release()
        # the cancelled waiter took nothing: the next request gets the connection back
        again = await asyncio.wait_for(
            client.request("GET", "127.0.0.1", port, b"/", max_connections=1), 5
        )
        assert await again.body() == b"ok"
        again.release()
        assert client.open_connections("127.0.0.1", port) == 1
        await client.aclose()
        listener.close()

    asyncio.run(run())
