"""``llamasup serve`` as a real child process, for end-to-end tests.

    with serving(profile_dir) as served:
        client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="x")
        ...
    # leaving the block sends SIGTERM and asserts exit 0 with no sidecar left behind

The serve process runs with the current interpreter (``python -m llamasup``) on a free
loopback port; readiness is its "serving" line on stderr, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from llamasup.testing.poll import PollTimeout, poll_until
from llamasup.testing.process import ServerProcess, free_port

T = TypeVar("T")

#: the front stops its sidecars and exits well within this after one SIGTERM
CLEAN_EXIT_TIMEOUT = 30.0


def alive(pid: int) -> bool:
    """True while ``pid`` is a process that has not exited (a zombie counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # the state follows the parenthesised command name, which may itself contain spaces
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


def children_of(pid: int) -> set[int]:
    """Pids of the live direct children of ``pid`` (read from /proc)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] not in {"Z", "X"}:
            found.add(int(entry.name))
    return found


@dataclass(frozen=True)
class Stopped:
    code: int
    seconds: float
    #: sidecar pids (seen in status or as children) still alive after the front exited
    left: list[int]


@dataclass
class Served:
    process: ServerProcess
    url: str
    #: every sidecar pid any status call reported
    seen_pids: set[int] = field(default_factory=set)
    stopped: Stopped | None = None

    def status(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/status", timeout=10, trust_env=False)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        self.seen_pids.update(row["pid"] for row in data["sidecars"] if row["pid"] is not None)
        return data

    def sidecars(self, model: str) -> list[dict[str, Any]]:
        """Status rows of ``model``'s sidecars that have a process."""
        return [r for r in self.status()["sidecars"] if r["model"] == model and r["pid"]]

    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
        """``poll_until(probe)``, failing at once if the serve process exits meanwhile; either
        failure shows the tail of its log."""

        def still_serving() -> T | None:
            result = probe()
            if not result:
                assert self.process.process.poll() is None, (
                    f"llamasup serve exited while waiting for {what}:\n{self.stderr_tail()}"
                )
            return result

        try:
            return poll_until(still_serving, timeout=timeout, interval=0.05, what=what)
        except PollTimeout as exc:
            raise PollTimeout(f"{exc}:\n{self.stderr_tail()}") from None

    def stderr_tail(self, lines: int = 40) -> str:
        return "\n".join(self.process.lines[-lines:])

    def stop(self, *signals: int, gap: float = 0.0, timeout: float = CLEAN_EXIT_TIMEOUT) -> Stopped:
        """Send ``signals`` (``gap`` s apart), wait for the exit and for sidecars to be gone."""
        pid = self.process.process.pid
        watched = self.seen_pids | children_of(pid)
        started = time.monotonic()
        for index, signum in enumerate(signals or (signal.SIGTERM,)):
            if index:
                time.sleep(gap)  # pacing the signals as the caller asked, not a wait
            self.process.signal(signum)
        code = self.process.wait_exit(timeout)
        seconds = time.monotonic() - started
        # the front reaps what it stops; a SIGKILLed group may take a moment to disappear
        # (what is still there after 5 s is reported, for the caller to assert on)
        with contextlib.suppress(PollTimeout):
            poll_until(lambda: not any(alive(p) for p in watched), timeout=5, interval=0.02)
        left = sorted(p for p in watched if alive(p))
        self.stopped = Stopped(code, seconds, left)
        return self.stopped


def serve_argv(profile_path: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "llamasup",
        "serve",
        str(profile_path),
        "--listen",
        f"127.0.0.1:{port}",
    ]


@contextmanager
def serving(
    profile_path: Path, *, environ: Mapping[str, str] | None = None, timeout: float = 60.0
) -> Iterator[Served]:
    """Run ``llamasup serve profile_path`` until the block ends, then stop it cleanly.

    A block that did not stop the process itself gets one SIGTERM on the way out, and the
    exit must be 0 within ``CLEAN_EXIT_TIMEOUT`` with no sidecar left. After a failure the
    whole process group is killed instead (sidecars die with the front: PR_SET_PDEATHSIG).
    """
    port = free_port()
    env = dict(os.environ if environ is None else environ)
    env.pop("LLAMASUP_PROFILES", None)
    with ServerProcess(serve_argv(profile_path, port), env) as process:
        url = f"http://127.0.0.1:{port}"
        process.wait_for_line(
            re.compile(rf"llamasup: serving \d+ models from .* on {re.escape(url)};"), timeout
        )
        served = Served(process, url)
        yield served
        if served.stopped is None:
            served.status()  # the sidecar pids, to check they are gone afterwards
            stopped = served.stop(signal.SIGTERM)
            assert stopped.code == 0, f"exit code {stopped.code}:\n{served.stderr_tail()}"
            assert not stopped.left, f"sidecars still running after exit: {stopped.left}"
