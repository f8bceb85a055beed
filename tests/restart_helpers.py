"""Planned restarts of a ``llamasup serve`` child process, with clients sending the whole time.

with ClientLoop(served.url, ["alpha", "beta"]) as loop:
    outcome = restart(served)
assert loop.errors == []
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
from e2e.serve_process import Served


@dataclass
class Answer:
    sent: float
    done: float
    model: str


@dataclass
class ClientLoop:
    """A thread per model that sends requests one after the other over one keep-alive
    connection (a plain and a streamed chat completion in turn) until the block ends; every
    failure is kept. Short answers: the loop is about the connection, not the model."""

    url: str
    models: Sequence[str]
    max_tokens: int = 2
    errors: list[str] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(model,), daemon=True) for model in self.models
        ]

    def __enter__(self) -> ClientLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def served_after(self, moment: float) -> int:
        with self._lock:
            return sum(1 for answer in self.answers if answer.sent >= moment)

    def longest_wait_around(self, moment: float) -> float:
        """The longest request among those in flight at ``moment`` or sent after it."""
        with self._lock:
            return max((a.done - a.sent for a in self.answers if a.done >= moment), default=0.0)

    def _run(self, model: str) -> None:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": self.max_tokens,
            "messages": [{"role": "user", "content": "hi"}],
        }
        with httpx.Client(base_url=self.url, timeout=60, trust_env=False) as client:
            stream = False
            while not self._stop.is_set():
                stream = not stream
                sent = time.monotonic()
                try:
                    if stream:
                        self._streamed(client, body)
                    else:
                        reply = client.post("/v1/chat/completions", json=body)
                        if reply.status_code != 200:
                            raise AssertionError(f"HTTP {reply.status_code}: {reply.text[:200]}")
                        reply.json()
                except Exception as exc:
                    with self._lock:
                        self.errors.append(f"{model}: {type(exc).__name__}: {exc}")
                    continue
                with self._lock:
                    self.answers.append(Answer(sent, time.monotonic(), model))

    @staticmethod
    def _streamed(client: httpx.Client, body: dict[str, Any]) -> None:
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as reply:
            if reply.status_code != 200:
                raise AssertionError(f"HTTP {reply.status_code}: {reply.read()[:200]!r}")
            lines = [line for line in reply.iter_lines() if line.startswith("data: ")]
        if not lines or lines[-1] != "data: [DONE]":
            raise AssertionError(f"stream cut short: {lines[-3:]}")


@dataclass(frozen=True)
class Restarted:
    #: ``time.monotonic()`` just before ``llamasup restart`` was run
    asked: float
    #: the command's own account (``--output json``): seconds and the new process's status
    seconds: float
    process: dict[str, Any]


def restart(served: Served, *extra: str) -> Restarted:
    """``llamasup restart`` against ``served``; it must succeed."""
    asked = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "llamasup", "restart", "--server", served.url, "-o", "json", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{served.stderr_tail()}"
    doc = json.loads(done.stdout)
    return Restarted(asked, doc["seconds"], doc["process"])


def outcomes(process: dict[str, Any]) -> dict[str, str]:
    """Model -> what became of its sidecar at the last restart."""
    return {item["model"]: item["result"] for item in process["last_restart"]["sidecars"]}
