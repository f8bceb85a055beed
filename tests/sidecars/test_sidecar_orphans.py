"""SIGKILL of llamasup must leave no sidecar behind (Linux: PR_SET_PDEATHSIG)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llamasup.sidecars.orphans import find_orphans, scope_of
from llamasup.sidecars.supervisor import Supervisor
from llamasup.sidecars.types import SidecarSettings
from llamasup.testing.poll import poll_until

from .sidecar_helpers import pid_alive

# the holder runs the real Supervisor on its event-loop thread, reports the pids of its
# ready sidecars on stdout, then waits to be killed
HOLDER = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from llamasup.sidecars.sidecar import SidecarSettings
    from llamasup.spec.resolve import SidecarSpec
    from llamasup.sidecars.supervisor import Supervisor
    from llamasup.sidecars import process

    process.PREFER_SETPRIV = sys.argv[7] == "setpriv"
    process.PREFER_POPEN = sys.argv[8] == "popen"

    async def main() -> None:
        binary, model, state_dir, first, last = sys.argv[1:6]
        settings = SidecarSettings(state_dir=Path(state_dir), port_range=(int(first), int(last)))
        supervisor = Supervisor(settings, resolve_binary=lambda spec: binary)
        sidecars = [
            supervisor.start(SidecarSpec(model=f"m{n}", kind="llama-server",
                                         binary="llama-server", args=("-m", model),
                                         env=(("N", str(n)),)))
            for n in range(2)
        ]
        await asyncio.gather(*(s.ensure_ready() for s in sidecars))
        pids = [s.status().pid for s in sidecars]
        report = {"pids": pids, "method": process.spawn_method(), "spawner": process.spawner()}
        print(json.dumps(report), flush=True)
        await asyncio.Event().wait()

    if sys.argv[6] == "uvloop":
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
@pytest.mark.parametrize(
    "way",
    [
        "asyncio/setpriv/popen",
        "asyncio/preexec/popen",
        "uvloop/setpriv/popen",
        "uvloop/preexec/popen",
        "asyncio/setpriv/loop",
        "uvloop/setpriv/loop",
    ],
)
def test_sigkilled_supervisor_leaves_no_sidecars(
    fake_binary: Path, model_file: Path, settings: SidecarSettings, tmp_path: Path, way: str
) -> None:
    """Both ways of arming PR_SET_PDEATHSIG (``setpriv`` in front of the server, or a
    ``preexec_fn``), on both event loops, spawned by ``Popen`` on the loop thread (Linux's
    way) or by the loop's own spawn (elsewhere's, libuv's under uvloop)."""
    loop, method, spawner = way.split("/")
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    first, last = settings.port_range
    holder = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(fake_binary),
            str(model_file),
            str(tmp_path / "state"),
            str(first),
            str(last),
            loop,
            method,
            spawner,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()  # pytest-timeout bounds this if the holder hangs
        report = json.loads(line)
        assert report["method"] == method, "setpriv --pdeathsig is missing on this host"
        assert report["spawner"] == spawner
        pids: list[int] = report["pids"]
        assert len(pids) == 2 and all(pid_alive(pid) for pid in pids)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        poll_until(
            lambda: not any(pid_alive(pid) for pid in pids),
            timeout=5.0,
            what=f"the sidecars {pids} to die with their supervisor",
        )
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def _wrapper(tmp_path: Path, fake_binary: Path) -> Path:
    """A ``binary:`` like many users write: sets something up, then runs the server without
    ``exec``, so the server is the sidecar's grandchild."""
    wrapper = tmp_path / "wrapped-server"
    wrapper.write_text(f'#!/bin/sh\nexport WRAPPED=1\n"{fake_binary}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux-only")
def test_grandchildren_of_a_sigkilled_llamasup_are_reaped_at_the_next_start(
    fake_binary: Path, model_file: Path, settings: SidecarSettings, tmp_path: Path
) -> None:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    state_dir = tmp_path / "state"
    first, last = settings.port_range
    holder = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(_wrapper(tmp_path, fake_binary)),
            str(model_file),
            str(state_dir),
            str(first),
            str(last),
            "asyncio",
            "setpriv",
            "popen",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        wrappers: list[int] = json.loads(holder.stdout.readline())["pids"]
        assert find_orphans(state_dir) == [], "sidecars of a live llamasup are not orphans"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        # PDEATHSIG: the wrappers die
        poll_until(lambda: not any(pid_alive(pid) for pid in wrappers), what="wrappers gone")
        left = find_orphans(state_dir)
        # what PDEATHSIG cannot reach: the servers the wrappers started, still listening
        assert len(left) == 2 and all(pid_alive(o.pid) for o in left), left
        assert {o.owner for o in left} == {holder.pid}
        assert find_orphans(tmp_path / "another-state-dir") == [], "scoped by state directory"

        supervisor = Supervisor(settings)
        reaped = supervisor.reap_orphans()
        assert sorted(o.pid for o in reaped) == sorted(o.pid for o in left)
        poll_until(lambda: not any(pid_alive(o.pid) for o in left), what="orphans reaped")
        assert find_orphans(state_dir) == []
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        for orphan in find_orphans(state_dir):
            os.kill(orphan.pid, signal.SIGKILL)


def _fake_proc(root: Path, pid: int, *, marker: str | None = None, start: str = "100") -> None:
    entry = root / str(pid)
    entry.mkdir(parents=True)
    fields = ["S", *["0"] * 18, start]  # stat fields 3..22 after "pid (comm)"
    (entry / "stat").write_text(f"{pid} (a (weird) name) {' '.join(fields)}\n")
    env = b"PATH=/bin\0" + (f"LLAMASUP_SIDECAR={marker}\0".encode() if marker else b"")
    (entry / "environ").write_bytes(env)
    (entry / "cmdline").write_bytes(b"llama-server\0--port\0 8500\0")


def test_only_marked_processes_of_this_state_dir_with_a_dead_owner_are_orphans(
    tmp_path: Path,
) -> None:
    proc = tmp_path / "proc"
    state = tmp_path / "state"
    scope = scope_of(state)
    _fake_proc(proc, 10, marker=None)  # an unrelated process: never
    _fake_proc(proc, 20, start="555")  # a live llamasup (pid 20, started at tick 555)
    _fake_proc(proc, 21, marker=f"{scope}:20:555")  # its sidecar: not an orphan
    _fake_proc(proc, 22, marker=f"{scope}:30:777")  # owner 30 is gone: an orphan
    _fake_proc(proc, 23, marker=f"{scope}:20:444")  # pid 20 reused by another: an orphan
    _fake_proc(proc, 24, marker=f"{scope_of(tmp_path / 'other')}:30:777")  # another deployment
    _fake_proc(proc, 25, marker="garbage")
    orphans = find_orphans(state, proc)
    assert sorted((o.pid, o.owner) for o in orphans) == [(22, 30), (23, 20)]
    assert orphans[0].argv.startswith("llama-server --port")
