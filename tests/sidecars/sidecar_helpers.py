"""Helpers shared by the sidecar tests (imported as a plain module next to them)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
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
