"""An idle front sleeps: no tick, no polling watch; what the tick kept fresh (the Date
header) is made when a response needs it."""

from __future__ import annotations

import re
import sys
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from e2e.serve_process import serving
from service_helpers import fake_profile, running_service, write_model_files

from llamasup.testing.poll import wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_the_date_header_is_current_and_moves_on(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    write_model_files(tmp_path, ["alpha"])
    profile = tmp_path / "p.yaml"
    profile.write_text(fake_profile(fake_server_bin, tmp_path / "state", {"alpha": ""}))
    async with running_service(profile, watch=False) as running:

        async def date() -> float:
            response = await running.client.get("/api/status")
            return parsedate_to_datetime(response.headers["date"]).timestamp()

        first = await date()
        assert abs(first - time.time()) < 2

        async def moved_on() -> float | None:
            value = await date()
            return value if value > first else None

        later = await wait_for(moved_on, what="a later Date", timeout=5)
        assert 1 <= later - first < 5


def _wakeups(pid: int) -> int:
    """Voluntary context switches of every thread of ``pid``: each is a sleep that ended."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found = re.search(
                r"^voluntary_ctxt_switches:\s+(\d+)", (task / "status").read_text(), re.M
            )
        except OSError:
            continue
        total += int(found.group(1)) if found else 0
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and inotify: Linux")
def test_an_idle_front_with_a_ready_sidecar_hardly_wakes(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    write_model_files(tmp_path, ["alpha"])
    profile = tmp_path / "p.yaml"
    profile.write_text(
        fake_profile(fake_server_bin, tmp_path / "state", {"alpha": "preload: true"})
    )
    with serving(profile) as served:
        served.wait_for(
            "alpha ready",
            lambda: [r for r in served.status()["sidecars"] if r["state"] == "ready"],
        )
        pid = served.process.process.pid
        served.status()  # the last request; what it woke settles within the window's margin
        before = _wakeups(pid)
        time.sleep(5.0)  # the measurement window itself, not a wait for something
        woken = _wakeups(pid) - before
    # before: a 10 Hz uvicorn tick and two 50 Hz watchfiles threads, ~550 in 5 s (the tick
    # alone would be 50); now the watch's 2 s check of the served path, whatever the status
    # request left behind, and some slack for a busy machine
    assert woken <= 25, woken
