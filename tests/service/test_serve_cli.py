"""``llamasup serve`` as a command: what it checks before anything starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from e2e.serve_process import serving
from service_helpers import fake_profile, write_model_files


def test_a_taken_front_port_fails_before_any_sidecar_starts(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    write_model_files(tmp_path, ["alpha"])
    argv_log = tmp_path / "argv.log"
    model = f"preload: true\nenv: {{FAKE_LLAMA_ARGV_LOG: '{argv_log}'}}"
    profile = tmp_path / "p.yaml"
    profile.write_text(fake_profile(fake_server_bin, tmp_path / "state", {"alpha": model}))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "llamasup", "serve", str(profile), "--listen",
             f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "LLAMASUP_PROFILES"},
            check=False,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "--listen" in done.stderr
    assert not argv_log.exists(), "a preload sidecar was started before the front could bind"


def test_serve_runs_on_uvloop_and_says_so(tmp_path: Path, fake_server_bin: Path) -> None:
    write_model_files(tmp_path, ["alpha"])
    profile = tmp_path / "p.yaml"
    profile.write_text(fake_profile(fake_server_bin, tmp_path / "state", {"alpha": ""}))
    with serving(profile) as served:
        assert served.status()["process"]["event_loop"] == "uvloop"
        assert "(event loop: uvloop)" in served.stderr_tail()


def test_without_uvloop_serve_runs_on_asyncio(tmp_path: Path, fake_server_bin: Path) -> None:
    write_model_files(tmp_path, ["alpha"])
    profile = tmp_path / "p.yaml"
    models = {"alpha": "preload: true"}
    profile.write_text(fake_profile(fake_server_bin, tmp_path / "state", models))
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "uvloop.py").write_text("raise ImportError('uvloop is not installed here')\n")
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join([str(shadow), environ.get("PYTHONPATH", "")])
    with serving(profile, environ=environ) as served:
        served.wait_for(
            "alpha ready", lambda: [r for r in served.status()["sidecars"] if r["state"] == "ready"]
        )
        assert served.status()["process"]["event_loop"] == "asyncio"
        assert "(event loop: asyncio)" in served.stderr_tail()
