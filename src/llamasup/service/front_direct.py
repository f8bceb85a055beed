"""The front's shortcut for a streamed response body (``proxy.asgi.DirectBody``).

uvicorn turns each ASGI body message into one chunk on the connection; relaying an event
stream through ``send`` costs a task switch and a message per event. The proxy's relay
instead writes each event from the upstream connection's callback through this object,
which frames it exactly as uvicorn's ``send`` would (HTTP/1.1 chunked) on the same
transport. It only says yes while that is all ``send`` would do: the response started in
chunks and not ended, the client connected, the write buffer not full (then ``send`` is
the one that waits). The end of the response still goes through ``send``, so uvicorn's
state (keep-alive, the next pipelined request) is its own.

Safe only behind middleware that leaves body messages alone: llamasup's gates touch the
response head at most (CORS headers).
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle


class CycleBody:
    """One request's shortcut; bound to its cycle once uvicorn has made it."""

    __slots__ = ("cycle",)

    def __init__(self) -> None:
        self.cycle: RequestResponseCycle | None = None

    def writable(self) -> bool:
        cycle = self.cycle
        return (
            cycle is not None
            and cycle.response_started
            and not cycle.response_complete
            and not cycle.disconnected
            and cycle.chunked_encoding is True
            and not cycle.flow.write_paused
            and cycle.scope["method"] != "HEAD"
            # closed after a failed write or a reset, before uvicorn hears of it: a write
            # now would raise in the sidecar connection's callback
            and not cycle.transport.is_closing()
        )

    def write(self, data: bytes) -> None:
        cycle = self.cycle
        assert cycle is not None
        cycle.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
