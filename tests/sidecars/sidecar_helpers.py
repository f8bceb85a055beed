"""Helpers shared by the sidecar tests (imported as a plain module next to them)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from llamasup.spec.resolve import SidecarSpec


def fake_spec(
    model_file: Path,
    env: Mapping[str, str] | None = None,
    *,
    model: str = "fake",
) -> SidecarSpec:
    return SidecarSpec(
        model=model,
        kind="llama-server",
        binary="llama-server",
        args=("-m", str(model_file)),
        env=tuple(sorted((env or {}).items())),
    )


async def poll_until(
    predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Check ``predicate`` every few ms until true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return not Path("/proc").exists()  # vanished meanwhile (or no procfs: trust kill)
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def squat(port: int) -> socket.socket:
    """A listener on ``port`` that never answers (SO_REUSEADDR, as a server would bind)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock
