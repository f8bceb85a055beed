"""``llamasup restart`` and SIGUSR2 on a real ``llamasup serve`` process (the fake llama-server
as every sidecar): the process re-executes itself, keeps its sidecars and its clients.

The real llama-server and models are in ``e2e/test_restart_e2e.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.serve_process import Served, serving
from restart_helpers import ClientLoop, outcomes, restart
from service_helpers import ProfileWriter

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="re-exec in place keeps children: Linux"
)


def ready_pids(served: Served, models: set[str]) -> dict[str, int] | None:
    rows = served.status()["sidecars"]
    ready = {row["model"]: row["pid"] for row in rows if row["state"] == "ready"}
    if set(ready) != models or len(rows) != len(models):
        return None
    return ready


def rows(served: Served) -> dict[str, dict[str, Any]]:
    return {row["model"]: row for row in served.status()["sidecars"]}


def test_a_restart_keeps_every_sidecar_and_refuses_no_request(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = ProfileWriter(fake_server_bin, tmp_path, tmp_path / "p.yaml")
    writer.write({"alpha": "pinned: true", "beta": "pinned: true"})
    with serving(writer.target) as served:
        before = served.wait_for("both ready", lambda: ready_pids(served, {"alpha", "beta"}))
        with ClientLoop(served.url, ["alpha", "beta"]) as loop:
            served.wait_for("requests flowing", lambda: loop.served_after(0) >= 10)
            first = restart(served)
            assert first.process["pid"] == served.process.process.pid  # re-executed in place
            assert first.process["restarts"] == 1
            assert outcomes(first.process) == {"alpha": "adopted", "beta": "adopted"}
            served.wait_for("answers after it", lambda: loop.served_after(first.asked) >= 10)
            # a signal does the same (systemctl reload sends it)
            served.process.signal(signal.SIGUSR2)
            served.wait_for("a second restart", lambda: served.status()["process"]["restarts"] == 2)
            second = served.status()["process"]["started_at"]
            mark = time.monotonic()
            served.wait_for("answers after the second", lambda: loop.served_after(mark) >= 5)
        assert loop.errors == []
        assert second != first.process["started_at"]
        assert ready_pids(served, {"alpha", "beta"}) == before  # the same processes
        now = rows(served)
        assert all(row["adopted_from"] == served.process.process.pid for row in now.values())
        # nothing was started again: each sidecar's log has one spawn
        for row in now.values():
            log = (writer.state_dir / "logs" / f"{row['key']}.log").read_text()
            assert log.count("[llamasup] started pid") == 1
            assert log.count("[llamasup] adopted pid") == 2
        metrics = httpx.get(f"{served.url}/metrics", timeout=10, trust_env=False).text
        assert 'llamasup_sidecar_adoptions_total{result="adopted"} 2.0' in metrics
        assert "llamasup_planned_restarts 2.0" in metrics
        # the whole output: the request log of the client loop writes a line per request
        assert "restarted in place" in served.process.stderr_text
    assert served.stopped is not None and not served.stopped.left


def test_a_profile_changed_across_a_restart_keeps_what_did_not_change(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = ProfileWriter(fake_server_bin, tmp_path, tmp_path / "p.yaml")
    writer.write({"alpha": "pinned: true", "beta": "pinned: true", "gamma": "pinned: true"})
    with serving(writer.target) as served:
        before = served.wait_for(
            "all ready", lambda: ready_pids(served, {"alpha", "beta", "gamma"})
        )
        old = rows(served)
        with ClientLoop(served.url, ["alpha"]) as loop:
            # beta's load-time flags change and gamma goes; the watcher may apply it first,
            # or the restart: either way alpha is kept and beta replaced
            writer.replace({"alpha": "pinned: true", "beta": "pinned: true\nargs: [-c, 1024]"})
            done = restart(served)
            after = served.wait_for(
                "alpha and the new beta", lambda: ready_pids(served, {"alpha", "beta"})
            )
        assert loop.errors == []
        assert after["alpha"] == before["alpha"]
        assert after["beta"] != before["beta"]
        assert "--ctx-size" in rows(served)["beta"]["argv"]
        assert rows(served)["beta"]["key"] != old["beta"]["key"]
        assert outcomes(done.process)["alpha"] == "adopted"
        by_key = {item["key"]: item["result"] for item in done.process["last_restart"]["sidecars"]}
        # the old beta, if the restart came first, was stopped; a new one it found, adopted
        assert by_key.get(old["beta"]["key"], "replaced") == "replaced"
        assert by_key.get(rows(served)["beta"]["key"], "adopted") == "adopted"
        assert by_key.get(old["gamma"]["key"], "replaced") == "replaced"


def test_a_sigkilled_serve_leaves_no_sidecar_from_before_or_after_a_restart(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    """``serve`` runs on uvloop and spawns on its loop thread (``Popen``, ``setpriv
    --pdeathsig``): the thread that forked is the one an ``execve`` in place keeps, so the
    sidecars of both program images die with it."""
    writer = ProfileWriter(fake_server_bin, tmp_path, tmp_path / "p.yaml")
    writer.write({"alpha": "pinned: true"})
    with serving(writer.target) as served:
        assert served.status()["process"]["event_loop"] == "uvloop"
        before = served.wait_for("alpha ready", lambda: ready_pids(served, {"alpha"}))
        restart(served)
        writer.write({"alpha": "pinned: true", "beta": "pinned: true"})
        both = served.wait_for("beta ready too", lambda: ready_pids(served, {"alpha", "beta"}))
        assert both["alpha"] == before["alpha"]  # adopted, spawned by the first image
        stopped = served.stop(signal.SIGKILL)
    assert stopped.code == -signal.SIGKILL
    assert sorted(both.values()) == sorted(served.seen_pids)
    assert not stopped.left, f"sidecars outlived their SIGKILLed front: {stopped.left}"


def test_a_restart_the_new_program_would_not_survive_is_refused(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = ProfileWriter(fake_server_bin, tmp_path, tmp_path / "p.yaml")
    writer.write({"alpha": "pinned: true"})
    with serving(writer.target) as served:
        before = served.wait_for("alpha ready", lambda: ready_pids(served, {"alpha"}))
        writer.target.write_text(writer.target.read_text() + "bogus_key: 1\n")
        done = subprocess.run(
            [sys.executable, "-m", "llamasup", "restart", "--server", served.url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert "restart refused: the new llamasup would not start" in done.stderr
        assert "bogus_key" in done.stderr
        status = served.status()
        assert status["process"]["restarts"] == 0
        assert ready_pids(served, {"alpha"}) == before


def test_serves_on_a_socket_passed_by_systemd(tmp_path: Path, fake_server_bin: Path) -> None:
    writer = ProfileWriter(fake_server_bin, tmp_path, tmp_path / "p.yaml")
    writer.write({"alpha": ""})
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    env = {**os.environ, "LISTEN_FDS": "1"}
    env.pop("LLAMASUP_PROFILES", None)
    # systemd passes the socket as descriptor 3 and sets LISTEN_PID to the service's pid,
    # which exec keeps
    as_systemd = (
        "import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); os.close(fd); "
        "os.environ['LISTEN_PID'] = str(os.getpid()); "
        "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
    )
    argv = [
        sys.executable, "-c", as_systemd, str(listener.fileno()),
        "-m", "llamasup", "serve", str(writer.target), "--listen", "127.0.0.1:1",
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, env=env, pass_fds=(listener.fileno(),), stderr=subprocess.PIPE, text=True
    )
    listener.close()  # the child holds it now, as systemd would
    try:
        assert process.stderr is not None
        line = ""
        for line in process.stderr:
            if "llamasup: serving" in line:
                break
        assert re.search(rf"on http://127\.0\.0\.1:{port};", line), line
        reply = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10, trust_env=False)
        assert reply.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_an_open_event_stream_ends_at_a_restart_instead_of_holding_it_up(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    # a dashboard left open: its /api/events stream must not hold the drain for stop_grace
    writer = ProfileWriter(fake_server_bin, tmp_path, tmp_path / "p.yaml", stop_grace="30s")
    writer.write({"alpha": "pinned: true"})
    with serving(writer.target) as served:
        served.wait_for("alpha ready", lambda: ready_pids(served, {"alpha"}))
        ended = threading.Event()
        lines: list[str] = []

        def follow() -> None:
            with httpx.stream("GET", f"{served.url}/api/events", timeout=60, trust_env=False) as r:
                for line in r.iter_lines():
                    lines.append(line)
            ended.set()

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        served.wait_for("the stream open", lambda: any(x.startswith("retry:") for x in lines))
        done = restart(served)
        assert done.seconds < 15  # not the 30 s stop_grace
        assert ended.wait(10), "the event stream was not ended by the restart"
        assert outcomes(done.process) == {"alpha": "adopted"}
        # the new program serves event streams again
        with httpx.stream("GET", f"{served.url}/api/events", timeout=10, trust_env=False) as r:
            assert r.status_code == 200


def test_a_live_status_watch_follows_the_server_across_a_restart(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = ProfileWriter(fake_server_bin, tmp_path, tmp_path / "p.yaml")
    writer.write({"alpha": "pinned: true"})
    with serving(writer.target) as served:
        served.wait_for("alpha ready", lambda: ready_pids(served, {"alpha"}))
        watch = subprocess.Popen(
            [sys.executable, "-m", "llamasup", "status", "-w", "-o", "json",
             "--server", served.url],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert watch.stdout is not None
            decoder = json.JSONDecoder()
            seen: list[int] = []

            def next_restarts() -> int:
                text = ""
                while True:
                    line = watch.stdout.readline()  # type: ignore[union-attr]
                    assert line, "status -w ended"
                    text += line
                    try:
                        doc, _ = decoder.raw_decode(text.strip())
                    except ValueError:
                        continue
                    return int(doc["process"]["restarts"])

            seen.append(next_restarts())
            assert seen == [0]
            restart(served)
            while seen[-1] == 0:  # frames of the old program may still come first
                seen.append(next_restarts())
            assert seen[-1] == 1  # the same watch, reconnected to the new program
        finally:
            watch.terminate()
            watch.wait(10)
