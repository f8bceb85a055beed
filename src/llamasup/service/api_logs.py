"""``GET /api/logs/{model-or-key}[?lines=N][&follow=1]``: a sidecar's output as plain text.

A key names one sidecar; a model id or alias names all of that model's running sidecars (one
per agent overlay with its own load-time flags), and each line is then prefixed with its key.
Without a running sidecar the tail of the log file on disk is served. ``follow`` keeps the
response open and sends lines as they are written, until the client goes away or every
followed sidecar has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from llamasup.errors import ResolveError
from llamasup.proxy.asgi import Receive, Send
from llamasup.service.api_errors import ApiError
from llamasup.service.host import ControlHost
from llamasup.sidecars.proclog import LogFollower, LogLine, ProcessLog
from llamasup.sidecars.sidecar import Sidecar
from llamasup.spec.resolve import split_target

DEFAULT_LINES = 100
MAX_LINES = 10_000


def _format(line: LogLine, prefix: str) -> bytes:
    stamp = time.strftime("%H:%M:%S", time.localtime(line.time))
    return f"{prefix}{stamp} {line.text}\n".encode(errors="replace")


def _targets(host: ControlHost, name: str) -> tuple[list[Sidecar], list[Path]] | None:
    """Running sidecars named by ``name``, else log files on disk; None: unknown name."""
    supervisor = host.reconciler.supervisor
    sidecar = supervisor.get(name)
    if sidecar is not None:
        return [sidecar], []
    log_dir = supervisor.settings.log_dir
    if "@" in name or name in host.profiles.agents:  # model@agent, @agent, a bare agent
        try:
            agent_key = host.reconciler.resolver.resolve(*split_target(name)).spec.key
        except ResolveError:
            return None
        found = supervisor.get(agent_key)
        return ([found], []) if found is not None else ([], [log_dir / f"{agent_key}.log"])
    model = host.profiles.find_model(name)
    if model is None:
        path = log_dir / f"{name}.log"
        return ([], [path]) if name.isalnum() and path.is_file() else None
    running = [s for s in supervisor.sidecars() if s.spec.model == model.id]
    if running:
        return running, []
    keys = host.reconciler.desired_keys(host.profiles)
    key = keys.get(model.id)
    return [], ([log_dir / f"{key}.log"] if key else [])


def _tail_file(path: Path, lines: int) -> list[bytes]:
    try:
        with path.open("rb") as handle:
            return [line if line.endswith(b"\n") else line + b"\n" for line in deque(handle, lines)]
    except OSError:
        return []


async def send_logs(
    host: ControlHost, name: str, query: Mapping[str, list[str]], receive: Receive, send: Send
) -> None:
    found = _targets(host, name)
    if found is None:
        raise ApiError(
            404, "unknown_sidecar", f"no model, alias, model@agent or sidecar key {name!r}"
        )
    sidecars, files = found
    raw_lines = query.get("lines", [str(DEFAULT_LINES)])[-1]
    if not raw_lines.isdigit():
        raise ApiError(400, "bad_lines", f"lines must be a number, not {raw_lines!r}")
    lines = min(int(raw_lines), MAX_LINES)
    follow = query.get("follow", ["0"])[-1].lower() in ("1", "true", "yes")
    multi = len(sidecars) > 1
    history: list[bytes] = []
    for path in files:
        history.extend(_tail_file(path, lines))
    sources = [LogSource.of_sidecar(s, f"[{s.key}] " if multi else "") for s in sidecars]
    await stream_sources(sources, history, lines, follow=follow, receive=receive, send=send)


@dataclass(frozen=True)
class LogSource:
    """One log to serve: lines are prefixed (``[key] ``) when several are merged."""

    prefix: str
    recent: Callable[[int], list[LogLine]]
    follow: Callable[[], LogFollower]

    @classmethod
    def of_sidecar(cls, sidecar: Sidecar, prefix: str) -> LogSource:
        return cls(prefix, sidecar.recent_logs, sidecar.follow_logs)

    @classmethod
    def of_log(cls, log: ProcessLog, prefix: str) -> LogSource:
        return cls(prefix, log.recent, log.follow)


async def stream_sources(
    sources: list[LogSource],
    history: list[bytes],
    lines: int,
    *,
    follow: bool,
    receive: Receive,
    send: Send,
) -> None:
    """The last ``lines`` of each source (after ``history``), merged by time; with
    ``follow``, then their new lines until the client leaves or every source ends."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
            ],
        }
    )
    recent = sorted(
        ((line, source.prefix) for source in sources for line in source.recent(lines)),
        key=lambda item: item[0].time,
    )
    chunks = [*history, *(_format(line, prefix) for line, prefix in recent)]
    if not follow or not sources:
        await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": False})
        return
    await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
    await _follow(sources, receive, send)


async def _follow(sources: list[LogSource], receive: Receive, send: Send) -> None:
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=10_000)

    async def pump(source: LogSource) -> None:
        follower = source.follow()
        try:
            async for line in follower:
                await queue.put(_format(line, source.prefix))
        finally:
            await follower.aclose()
            await queue.put(None)

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    pumps = [asyncio.create_task(pump(s)) for s in sources]
    gone = asyncio.create_task(disconnected())
    open_pumps = len(pumps)
    try:
        while open_pumps:
            getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({getter, gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone in done:
                getter.cancel()
                return
            item = getter.result()
            if item is None:
                open_pumps -= 1
                continue
            await send({"type": "http.response.body", "body": item, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        for task in (*pumps, gone):
            task.cancel()
        for task in (*pumps, gone):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
