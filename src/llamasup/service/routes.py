"""One route table for the control API: what answers a path, and which methods it accepts.

Dispatch and the ``405 Allow`` answer read the same rows, so a route cannot be served without
being advertised or advertised without being served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from llamasup.proxy.asgi import Receive, Scope, Send

#: answers one request; ``tail`` is what follows a prefix route's prefix ("" for exact routes)
Handler = Callable[[Scope, Receive, Send, str], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    #: ``path`` is a prefix, and the rest of the request path (non-empty) is the handler's tail
    prefix: bool = False

    def tail(self, path: str) -> str | None:
        if not self.prefix:
            return "" if path == self.path else None
        if path.startswith(self.path) and len(path) > len(self.path):
            return path[len(self.path) :]
        return None


@dataclass(frozen=True)
class Match:
    """The handler of a request (and its tail), or the methods its path accepts instead."""

    handler: Handler | None
    tail: str = ""
    allowed: tuple[str, ...] = ()


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = tuple(routes)

    def match(self, method: str, path: str) -> Match:
        allowed: list[str] = []
        for route in self._routes:
            tail = route.tail(path)
            if tail is None:
                continue
            if route.method == method:
                return Match(route.handler, tail)
            if route.method not in allowed:
                allowed.append(route.method)
        return Match(None, allowed=tuple(allowed))
