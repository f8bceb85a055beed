"""How to serve the proxy: the uvicorn settings the benchmark was measured with."""

from __future__ import annotations

from typing import Any

import uvicorn

from llamasup.core import defaults
from llamasup.proxy.asgi import ASGIApp


def uvicorn_config(
    app: ASGIApp,
    *,
    host: str = defaults.LISTEN_HOST,
    port: int = defaults.LISTEN_PORT,
    **overrides: Any,
) -> uvicorn.Config:
    """A uvicorn config for the proxy (and whatever it falls through to).

    httptools and uvloop are the fast paths of uvicorn (both come with ``uvicorn[standard]``);
    the access log costs a formatted log record per request and the proxy-headers middleware
    only matters behind a reverse proxy, so both are off. Loopback unless told otherwise.
    """
    settings: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": "httptools",
        "loop": "uvloop",
        "access_log": False,
        "proxy_headers": False,
        "log_level": "warning",
        "timeout_graceful_shutdown": 10,
    }
    settings.update(overrides)
    return uvicorn.Config(app, **settings)
