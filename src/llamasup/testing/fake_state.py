"""Options, scripted behaviour, log writer and counters shared by the fake llama-server's parts.

Stdlib only and cheap to import (no typing, no dataclasses): the fake's start-to-ready time
is part of every test that uses it.
"""

from __future__ import annotations

import json
import os
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

_T0 = time.monotonic()


class FakeUsageError(Exception):
    """The fake was started with arguments or environment it cannot use."""


# --- log lines ------------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def timestamp() -> str:
    # llama.cpp's prefix is minutes.seconds.milliseconds.microseconds since start
    micros = int((time.monotonic() - _T0) * 1_000_000)
    return (
        f"{micros // 60_000_000}.{micros // 1_000_000 % 60:02d}"
        f".{micros // 1000 % 1000:03d}.{micros % 1000:03d}"
    )


class Log:
    """Writes lines shaped like llama-server's default stderr log (prefix and timestamps on).

    Writes go straight to file descriptor 2 without buffering, so a reader that stops
    draining the pipe really does block the writer, as with the real server.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def raw(self, text: str) -> None:
        with self._lock:
            _write_all(2, text.encode("utf-8", errors="replace"))

    def line(self, level: str, text: str) -> None:
        self.raw(f"{timestamp()} {level} {text}\n")

    def srv(self, level: str, func: str, message: str) -> None:
        # SRV_INF in tools/server/server-common.h: "srv  %12.*s: "
        self.line(level, f"srv  {func:>12.12}: {message}")

    def slot(self, level: str, func: str, task: int, message: str) -> None:
        # SLT_INF: "slot %12.*s: id %2d | task %d | "; the fake answers everything in slot 0
        self.line(level, f"slot {func:>12.12}: id  0 | task {task} | {message}")

    def spam(self, size: int) -> None:
        """Write about ``size`` bytes of filler log lines (to prove a reader drains pipes)."""
        line = f"{timestamp()} D srv  log_spammer: " + "x" * 100 + "\n"
        count = max(1, size // len(line))
        self.raw(line * count)


# --- scripted behaviour -----------------------------------------------------------------------


def _number(environ: Mapping[str, str], name: str) -> float | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise FakeUsageError(f"{name}={raw!r} is not a number") from exc


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class Behaviour:
    """What the fake was told to do through ``FAKE_LLAMA_*`` variables (see fake_server)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        def integer(name: str) -> int | None:
            value = _number(environ, name)
            return None if value is None else int(value)

        tokens = integer("FAKE_LLAMA_TOKENS")
        self.load_delay: float = _number(environ, "FAKE_LLAMA_LOAD_DELAY") or 0.0
        self.progress_interval = _number(environ, "FAKE_LLAMA_PROGRESS_INTERVAL")
        self.hang_load = _flag(environ, "FAKE_LLAMA_HANG_LOAD")
        self.crash_at_start = integer("FAKE_LLAMA_CRASH_AT_START")
        self.crash_after_requests = integer("FAKE_LLAMA_CRASH_AFTER_REQUESTS")
        self.crash_mid_stream = _flag(environ, "FAKE_LLAMA_CRASH_MID_STREAM")
        self.ignore_sigterm = _flag(environ, "FAKE_LLAMA_IGNORE_SIGTERM")
        self.fail_health_after = _number(environ, "FAKE_LLAMA_FAIL_HEALTH_AFTER")
        self.stream_delay: float = _number(environ, "FAKE_LLAMA_STREAM_DELAY") or 0.0
        self.tokens = 8 if tokens is None else max(0, tokens)
        self.log_spam = integer("FAKE_LLAMA_LOG_SPAM") or 0
        self.argv_log = environ.get("FAKE_LLAMA_ARGV_LOG") or None
        self.request_log = environ.get("FAKE_LLAMA_REQUEST_LOG") or None
        self.replies = _replies(environ.get("FAKE_LLAMA_REPLIES") or None)
        self.devices_file = environ.get("FAKE_LLAMA_DEVICES") or None
        self.listening_first = _flag(environ, "FAKE_LLAMA_LISTENING_FIRST")
        self.no_ready_line = _flag(environ, "FAKE_LLAMA_NO_READY_LINE")

    def reply_to(self, prompt: str) -> str | None:
        """The scripted reply of the first needle found in the prompt, if any."""
        for needle, reply in self.replies:
            if needle in prompt:
                return reply
        return None

    def log_request(self, pid: int, path: str, body: object) -> None:
        assert self.request_log is not None
        line = json.dumps({"pid": pid, "path": path, "body": body}) + "\n"
        # one O_APPEND write per line keeps concurrent requests and fakes from interleaving
        fd = os.open(self.request_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _write_all(fd, line.encode())
        finally:
            os.close(fd)


def _replies(path: str | None) -> list[tuple[str, str]]:
    """``FAKE_LLAMA_REPLIES``: a JSON file of ``[[needle, reply], ...]`` (or an object)."""
    if path is None:
        return []
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise FakeUsageError(f"FAKE_LLAMA_REPLIES={path!r}: {exc}") from exc
    items = data.items() if isinstance(data, dict) else data
    return [(str(needle), str(reply)) for needle, reply in items]


# --- command line -----------------------------------------------------------------------------


class Options:
    """The few llama-server flags the fake honours; every other flag is accepted and ignored."""

    def __init__(
        self,
        *,
        model: str | None = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        aliases: tuple[str, ...] = (),
        metrics: bool = False,
        embeddings: bool = False,
        api_keys: tuple[str, ...] = (),
        show_version: bool = False,
        list_devices: bool = False,
    ) -> None:
        self.model = model
        self.host = host
        self.port = port
        self.aliases = aliases
        self.metrics = metrics
        self.embeddings = embeddings
        self.api_keys = api_keys
        self.show_version = show_version
        self.list_devices = list_devices

    @property
    def model_id(self) -> str:
        # like the real server: the smallest alias, else the -m string exactly as given
        return self.aliases[0] if self.aliases else (self.model or "")


# --- counters ---------------------------------------------------------------------------------


class Stats:
    """Request counters, read by ``/x-fake/stats`` and ``/metrics``."""

    def __init__(self) -> None:
        self.requests = 0
        self.active = 0
        self.cancelled = 0
        self.prompt_tokens = 0
        self.predicted_tokens = 0
        #: /health requests answered while loading (503) and once ready
        self.health_loading = 0
        self.health_ready = 0
        self.lock = threading.Lock()

    def begin(self) -> int:
        """Count one inference request in; returns its 1-based number."""
        with self.lock:
            self.requests += 1
            self.active += 1
            return self.requests

    def end(self, *, prompt_tokens: int, predicted_tokens: int, cancelled: bool) -> None:
        with self.lock:
            self.active -= 1
            self.prompt_tokens += prompt_tokens
            self.predicted_tokens += predicted_tokens
            self.cancelled += int(cancelled)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {"requests": self.requests, "active": self.active, "cancelled": self.cancelled}

    def count_health(self, *, ready: bool) -> None:
        with self.lock:
            if ready:
                self.health_ready += 1
            else:
                self.health_loading += 1

    def health_probes(self) -> dict[str, int]:
        with self.lock:
            return {"loading": self.health_loading, "ready": self.health_ready}


class FakeState:
    """Everything a request handler needs to know about the running fake."""

    def __init__(self, options: Options, behaviour: Behaviour, log: Log) -> None:
        self.options = options
        self.behaviour = behaviour
        self.log = log
        self.stats = Stats()
        self.ready = threading.Event()
        self.ready_at = 0.0
        self.created = int(time.time())

    def mark_ready(self) -> None:
        self.ready_at = time.monotonic()
        self.ready.set()

    def health_failed(self) -> bool:
        after = self.behaviour.fail_health_after
        return after is not None and time.monotonic() - self.ready_at >= after
