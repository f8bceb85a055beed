"""How to serve the proxy: the uvicorn settings the benchmark was measured with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import uvicorn

from llamasup.core import defaults
from llamasup.profiles.types import ServerConfig
from llamasup.proxy.asgi import ASGIApp
from llamasup.service.front_limits import FrontLimits, front_limits, open_files_limit
from llamasup.service.front_protocol import guarded_protocol


def uvicorn_config(
    app: ASGIApp,
    *,
    host: str = defaults.LISTEN_HOST,
    port: int = defaults.LISTEN_PORT,
    limits: Callable[[], FrontLimits] | None = None,
    **overrides: Any,
) -> uvicorn.Config:
    """A uvicorn config for the proxy (and whatever it falls through to).

    httptools and uvloop are the fast paths of uvicorn (both come with ``uvicorn[standard]``);
    the httptools protocol is llamasup's subclass that enforces ``limits()`` (connections,
    request heads, client timeouts; read for each new connection, so a reload applies to
    the next ones; default: the profile defaults). The access log costs a formatted log
    record per request and the proxy-headers middleware only matters behind a reverse
    proxy, so both are off. Loopback unless told otherwise.
    """
    if limits is None:
        fixed = front_limits(ServerConfig(), open_files_limit())
        limits = lambda: fixed  # noqa: E731
    settings: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": guarded_protocol(limits),
        "loop": "uvloop",
        "access_log": False,
        "proxy_headers": False,
        "log_level": "warning",
        "timeout_graceful_shutdown": 10,
    }
    settings.update(overrides)
    return uvicorn.Config(app, **settings)
