"""A llama-server (real or fake) child process for tests: drained stderr, deadline-based waits.

Tests wait on what the server says (its log lines, its HTTP answers) with a deadline,
never on a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType

LISTENING = re.compile(r"listening on http://(?P<host>\[[^\]]+\]|[^:/\s]+):(?P<port>\d+)")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for tests that must know the port before ready)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """One child process whose stderr is read continuously into ``lines``."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.argv = list(argv)
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            self.argv,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # its own process group, so a stop reaches anything it spawned
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._drain, name="stderr-reader", daemon=True)
        self._reader.start()
        self.port: int | None = None

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            with self._changed:
                self._lines.append(raw.decode("utf-8", errors="replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def lines(self) -> list[str]:
        with self._changed:
            return list(self._lines)

    @property
    def stderr_text(self) -> str:
        return "\n".join(self.lines)

    @property
    def base_url(self) -> str:
        assert self.port is not None, "wait_listening() first"
        return f"http://127.0.0.1:{self.port}"

    def _tail(self) -> str:
        return "\n".join(self.lines[-20:])

    def wait_for_line(self, pattern: str | re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first stderr line matching ``pattern``; fails if the process exits first."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self._lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self._lines)
                finished = not self._reader.is_alive()
                remaining = deadline - time.monotonic()
                if finished or remaining <= 0:
                    state = "exited" if finished else f"timed out after {timeout} s"
                    raise AssertionError(
                        f"{state} before a line matched {regex.pattern!r}; stderr tail:\n"
                        + "\n".join(self._lines[-20:])
                    )
                self._changed.wait(min(remaining, 0.5))

    def wait_listening(self, timeout: float = 10.0) -> int:
        """Wait for the "listening on" line and remember the port it names."""
        self.port = int(self.wait_for_line(LISTENING, timeout)["port"])
        return self.port

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"still running after {timeout} s; stderr tail:\n{self._tail()}"
            ) from exc
        self._reader.join(timeout)
        return code

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def close(self) -> None:
        """Kill the whole process group (if still running) and reap it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
