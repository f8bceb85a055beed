"""A minimal HTTP GET for health probes: connect, send, read the status line, close.

Readiness polling runs every few milliseconds during a load, so this avoids a full HTTP
client: one TCP connect and one small read per probe, no pooling, no body parsing.
"""

from __future__ import annotations

import asyncio
import contextlib


async def http_status(
    host: str,
    port: int,
    path: str,
    *,
    limit: float,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> int | None:
    """The status of ``GET path``, or None if nothing valid answered within ``limit`` s."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(host, port)
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            extra = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n".encode()
                + extra
                + b"\r\n"
            )
            line = await reader.readline()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        return None
    try:
        return int(parts[1])
    except ValueError:
        return None
