"""Helpers shared by the sidecar tests (imported as a plain module next to them)."""

from __future__ import annotations

import contextlib
import os
import signal
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


class Detached:
    """A sidecar process started the way a previous llamasup image would leave it for the
    next one: its own session, stdout and stderr into pipes whose read ends this process
    holds, not known to any child watcher (only whoever adopts it reaps it)."""

    def __init__(
        self, binary: Path, model: Path, port: int, *, key: str | None = None, **env: str
    ) -> None:
        self.port = port
        self.key = key
        argv = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
        child_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        if key is not None:
            child_env["LLAMA_API_KEY"] = key
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_write, 1),
            (os.POSIX_SPAWN_DUP2, err_write, 2),
        ]
        try:
            self.pid = os.posix_spawn(argv[0], argv, child_env, file_actions=actions, setsid=True)
        finally:
            os.close(out_write)
            os.close(err_write)
        #: 1/2 -> read end, as a hand-over record carries them
        self.pipes = {1: out_read, 2: err_read}

    def handle_pipes(self) -> dict[int, int]:
        """The pipes, given away (to a hand-over record, which owns them from now on)."""
        pipes, self.pipes = self.pipes, {}
        return pipes

    def kill(self) -> None:
        """Make sure it is gone and reaped (a test that failed half-way)."""
        for fd in self.pipes.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pipes = {}
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
