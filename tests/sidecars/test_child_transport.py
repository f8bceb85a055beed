"""``process.spawn`` on Linux: ``Popen`` on the loop thread, a ``ChildTransport`` (pipes on the
loop, the exit through a pidfd), on both event loops (see conftest's ``anyio_backend``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llamasup.sidecars import process
from llamasup.sidecars.child import ChildTransport
from llamasup.sidecars.proclog import ProcessLog
from llamasup.sidecars.run import Run
from llamasup.testing.poll import wait_for

from .sidecar_helpers import pid_alive

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not process.PREFER_POPEN, reason="the Popen + pidfd spawn is Linux-only"),
]


class Recorder(asyncio.SubprocessProtocol):
    """Records every callback in order, and the output per stream."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.output: dict[int, bytes] = {1: b"", 2: b""}
        self.transport: asyncio.SubprocessTransport | None = None
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.transport = transport
        self.calls.append("connection_made")

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        assert isinstance(data, bytes)
        self.output[fd] += data
        self.calls.append(f"data {fd}")

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.calls.append(f"pipe lost {fd}")

    def process_exited(self) -> None:
        self.calls.append("exited")

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append("connection_lost")
        self.lost.set()


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


async def _spawn(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[asyncio.SubprocessTransport, Recorder]:
    return await process.spawn(argv, os.environ if env is None else env, Recorder, cwd=cwd)


async def test_callbacks_come_in_asyncio_order_with_output_and_exit_code() -> None:
    transport, proto = await _spawn(
        _python(
            """
            import sys
            sys.stdout.write("to stdout\\n"); sys.stdout.flush()
            sys.stderr.write("to stderr\\n"); sys.stderr.flush()
            sys.exit(3)
            """
        )
    )
    assert isinstance(transport, ChildTransport)
    assert proto.transport is transport
    await asyncio.wait_for(proto.lost.wait(), 30)
    assert proto.calls[0] == "connection_made"
    assert proto.calls[-1] == "connection_lost"
    assert proto.calls.count("exited") == 1
    assert {"pipe lost 1", "pipe lost 2"} <= set(proto.calls)
    assert proto.output == {1: b"to stdout\n", 2: b"to stderr\n"}
    assert transport.get_returncode() == 3
    transport.close()


async def test_a_child_killed_by_a_signal_reports_minus_the_signal() -> None:
    transport, proto = await _spawn(_python("import time; time.sleep(60)"))
    pid = transport.get_pid()
    process.signal_group(pid, signal.SIGKILL)
    await asyncio.wait_for(proto.lost.wait(), 30)
    assert transport.get_returncode() == -signal.SIGKILL
    assert not pid_alive(pid)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped already: no zombie left for anyone
    transport.close()


async def test_the_child_gets_its_session_env_cwd_and_nothing_else_of_ours(
    tmp_path: Path,
) -> None:
    leaked_r, leaked_w = os.pipe()
    os.set_inheritable(leaked_w, True)  # even an inheritable descriptor must stay here
    try:
        transport, proto = await _spawn(
            _python(
                """
                import json, os
                print(json.dumps({
                    "sid": os.getsid(0), "pgid": os.getpgid(0), "pid": os.getpid(),
                    "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
                    "stdin": os.readlink("/proc/self/fd/0"),
                    "cwd": os.getcwd(), "env": os.environ.get("ONLY_THIS"),
                    "home": os.environ.get("HOME"),
                }))
                """
            ),
            env={"ONLY_THIS": "yes", "PATH": os.environ.get("PATH", "")},
            cwd=tmp_path,
        )
        await asyncio.wait_for(proto.lost.wait(), 30)
    finally:
        os.close(leaked_r)
        os.close(leaked_w)
    seen = json.loads(proto.output[1])
    assert seen["sid"] == seen["pgid"] == seen["pid"] == transport.get_pid()
    # 0-2 and the descriptor listdir opened to list them; setpriv adds nothing
    assert len(seen["fds"]) == 4 and seen["fds"][:3] == [0, 1, 2]
    assert seen["stdin"] == "/dev/null"
    assert Path(seen["cwd"]) == tmp_path
    assert seen["env"] == "yes" and seen["home"] is None
    assert transport.get_returncode() == 0
    transport.close()


async def test_output_written_before_the_transport_is_connected_is_kept() -> None:
    """The child can write (and exit) before the loop has connected both pipes: those
    callbacks wait for ``connection_made``, nothing is lost or reordered before it."""
    lines = 2000
    transport, proto = await _spawn(
        _python(f"import sys\nfor n in range({lines}): print(n)\nsys.stderr.write('end\\n')")
    )
    await asyncio.wait_for(proto.lost.wait(), 30)
    assert proto.output[1].decode().split() == [str(n) for n in range(lines)]
    assert proto.output[2] == b"end\n"
    assert proto.calls[0] == "connection_made"
    transport.close()


async def test_a_child_gone_before_its_pipes_are_connected_loses_no_output() -> None:
    """The exit (and the first pipe's end) can come while the second pipe is still being
    connected: ``connection_lost`` must still wait for the second pipe's output."""
    popen = subprocess.Popen(
        _python("import os; os.write(1, b'out'); os.write(2, b'err')"),
        bufsize=0,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    # exited, not reaped: the pidfd is readable from the first poll of the loop on
    os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOWAIT)
    proto = Recorder()
    transport = await ChildTransport.start(popen, proto)
    await asyncio.wait_for(proto.lost.wait(), 30)
    assert proto.output == {1: b"out", 2: b"err"}
    assert proto.calls[0] == "connection_made" and proto.calls[-1] == "connection_lost"
    assert transport.get_returncode() == 0
    transport.close()


async def test_a_start_cancelled_while_connecting_kills_and_reaps_the_child() -> None:
    popen = subprocess.Popen(
        _python("import time; time.sleep(60)"),
        bufsize=0,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    proto = Recorder()
    starting = asyncio.ensure_future(ChildTransport.start(popen, proto))
    await asyncio.sleep(0)  # let it begin connecting the pipes, then cancel it there
    assert not starting.done()
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    await wait_for(lambda: popen.returncode is not None, what="the child killed and reaped")
    assert popen.returncode == -signal.SIGKILL
    assert proto.calls == []  # a protocol that never got connection_made hears nothing
    assert popen.stdout is not None and popen.stdout.closed


async def test_exec_failure_raises_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await _spawn([str(tmp_path / "no-such-binary")])
    not_executable = tmp_path / "plain-file"
    not_executable.write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError):
        await _spawn([str(not_executable)])


async def test_a_runs_start_note_comes_before_any_of_its_output(tmp_path: Path) -> None:
    """The sidecar log starts with llamasup's "started pid" note even when the child wrote
    before the loop had connected its pipes (a loaded machine made the note come second)."""
    log = ProcessLog(tmp_path / "log", ring_lines=5000)
    run = Run(0, log, lambda pid: f"started pid {pid}")
    lines = 2000
    transport, _ = await process.spawn(
        _python(f"import sys\nfor n in range({lines}): print(n)\nsys.stderr.write('end\\n')"),
        os.environ,
        lambda: run,
    )
    await asyncio.wait_for(run.exited.wait(), 30)
    recent = [line.text for line in log.recent()]
    assert recent[0] == f"[llamasup] started pid {run.pid}"
    assert [text for text in recent[1:] if text != "end"] == [str(n) for n in range(lines)]
    assert recent.count("end") == 1
    transport.close()
