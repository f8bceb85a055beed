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

from llamasup.sidecars.sidecar import SidecarSettings
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
        print(json.dumps([s.status().pid for s in sidecars]), flush=True)
        await asyncio.Event().wait()

    if sys.argv[6] == "uvloop":
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_sigkilled_supervisor_leaves_no_sidecars(
    fake_binary: Path, model_file: Path, settings: SidecarSettings, tmp_path: Path, loop: str
) -> None:
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
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()  # pytest-timeout bounds this if the holder hangs
        pids: list[int] = json.loads(line)
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
