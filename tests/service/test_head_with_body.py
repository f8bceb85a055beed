"""A response head goes out with the body that follows it in the same turn (one write, one
syscall), and never later than the end of that turn."""

from __future__ import annotations

import asyncio
from typing import Any

from llamasup.service.front_protocol import _HeadWithBody


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[str] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.events.append("close")

    def write_eof(self) -> None:
        self.events.append("eof")

    def get_extra_info(self, name: str) -> Any:
        return f"info:{name}"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def test_head_and_body_of_one_turn_are_one_write() -> None:
    async def run() -> None:
        raw = Recorder()
        transport = _HeadWithBody(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(HEAD)
        transport.write(b"ok")
        assert raw.writes == [HEAD + b"ok"]
        # a stream: the head alone leaves at the end of the turn, chunks go straight out
        transport.write(HEAD)
        assert raw.writes == [HEAD + b"ok"]
        await asyncio.sleep(0)  # the end of this turn of the loop
        assert raw.writes == [HEAD + b"ok", HEAD]
        transport.write(b"data: 1\n\n")
        assert raw.writes[-1] == b"data: 1\n\n"
        # closing (and a half-close) sends a held head first
        transport.write(HEAD)
        transport.write_eof()
        transport.write(HEAD)
        transport.close()
        assert raw.writes[-2:] == [HEAD, HEAD]
        assert raw.events == ["eof", "close"]
        assert transport.get_extra_info("socket") == "info:socket"  # the rest is the transport's

    asyncio.run(run())
