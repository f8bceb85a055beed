"""Running model-written code against a suite's tests: only when the user passed
``--allow-code-execution``, in a child process with limits. What it is and is not:

- a fresh ``python -I`` (no user site, no ``PYTHON*`` variables, no current directory on the
  path) in a new temporary directory that is removed afterwards, with a minimal environment
  (no inherited variables: no keys or tokens reach the code);
- resource limits set in the child before the code runs: CPU seconds, address space, file
  size, open files, no core dumps; a wall-clock timeout kills its whole process group;
- no network where the kernel lets us: the child enters a new network namespace (root, or
  unprivileged user namespaces) with no interface but a down loopback. Where that is refused,
  ``socket`` is replaced by a stub that raises, which stops accidents, not an attacker
  (``_socket`` is still there): the result says which one applied (``isolation``).

It is not a sandbox against hostile code: the code runs as your user, can read what you can
read and write outside its directory. Run suites of untrusted origin in a container or VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: runs in the child before the program: limits, the network, then the program itself
_LAUNCHER = r"""
import ctypes, os, resource, sys
cpu, memory, fsize = (int(v) for v in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
isolation = "none"
try:
    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
    if libc.unshare(CLONE_NEWNET) == 0 or libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        isolation = "network-namespace"
except Exception:
    pass
if isolation == "none":
    import socket
    def _refused(*args, **kwargs):
        raise OSError("network access is disabled for evaluated code")
    socket.socket = _refused
    socket.create_connection = _refused
    socket.getaddrinfo = _refused
    isolation = "socket-stub"
sys.stderr.write(f"llamasup-sandbox: isolation={isolation}\n")
sys.stderr.flush()
sys.argv = ["solution.py"]
source = open("solution.py", encoding="utf-8").read()
exec(compile(source, "solution.py", "exec"), {"__name__": "__main__"})
"""

MARKER = "llamasup-sandbox: isolation="


@dataclass(frozen=True)
class Limits:
    seconds: float = 10.0
    memory: int = 1 << 30
    file_size: int = 16 << 20


@dataclass(frozen=True)
class Execution:
    """How a program ended: ``passed`` (exit 0), ``failed``, ``timeout`` or ``error``."""

    status: str
    isolation: str
    returncode: int | None
    output: str  # the last lines of stdout and stderr

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "isolation": self.isolation,
            "returncode": self.returncode,
            "output": self.output,
        }


async def run_program(program: str, limits: Limits = Limits()) -> Execution:
    """Run ``program`` (Python source) under ``limits``; never raises for what the code does."""
    with tempfile.TemporaryDirectory(prefix="llamasup-eval-") as workdir:
        await asyncio.to_thread(Path(workdir, "solution.py").write_text, program, "utf-8")
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8", "TMPDIR": workdir}
        cpu = max(1, int(limits.seconds + 0.999))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-c",
            _LAUNCHER,
            str(cpu),
            str(limits.memory),
            str(limits.file_size),
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), limits.seconds + 2)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            out, err = await process.communicate()
            return Execution("timeout", _isolation(err), None, _tail(out, err))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # anything it left behind
    code = process.returncode
    status = "passed" if code == 0 else ("timeout" if code == -signal.SIGXCPU else "failed")
    if code == -signal.SIGKILL:
        status = "timeout"  # CPU hard limit reached
    return Execution(status, _isolation(err), code, _tail(out, err))


def _isolation(stderr: bytes) -> str:
    for line in stderr.decode("utf-8", "replace").splitlines():
        if line.startswith(MARKER):
            return line[len(MARKER) :].strip()
    return "unknown"


def _tail(stdout: bytes, stderr: bytes, lines: int = 8) -> str:
    text = stdout.decode("utf-8", "replace") + stderr.decode("utf-8", "replace")
    kept = [line for line in text.splitlines() if not line.startswith(MARKER)]
    return "\n".join(kept[-lines:])
