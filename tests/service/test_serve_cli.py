"""``llamasup serve`` as a command: what it checks before anything starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

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
