"""The GitOps loop on real llama-servers: a checkout of the profiles is diffed and applied to a
running ``llamasup serve`` with the CLI, and only the sidecar of the edited model restarts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from e2e.serve_process import serving
from e2e.test_serve_e2e import write_profile

pytestmark = pytest.mark.e2e


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamasup", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_diff_and_apply_restart_only_the_edited_model(
    tmp_path: Path, llama_server_bin: Path, tiny_model: Path
) -> None:
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    state = tmp_path / "state"
    write_profile(served_dir / "profiles.yaml", llama_server_bin, tiny_model, state)
    with serving(served_dir) as served:
        before = {
            m: served.wait_for(f"{m} ready", partial(served.sidecars, m)) for m in ("one", "two")
        }
        checkout = tmp_path / "checkout"
        shutil.copytree(served_dir, checkout, ignore=shutil.ignore_patterns(".*"))
        assert cli("diff", "-f", str(checkout), "--server", served.url).returncode == 0

        # the edit in git: model two gets a smaller context; same ports so nothing else moves
        text = (checkout / "profiles.yaml").read_text()
        edited = text.replace("    args: []", "    args: [--ctx-size, 256]")
        assert edited != text
        (checkout / "profiles.yaml").write_text(edited)

        diff = cli("diff", "-f", str(checkout), "--server", served.url)
        assert diff.returncode == 1, diff.stdout + diff.stderr
        assert "two" in diff.stdout

        applied = cli("apply", "-f", str(checkout), "--server", served.url)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert (served_dir / "profiles.yaml").read_text() == edited  # persisted

        def two_restarted() -> bool:
            rows = served.sidecars("two")
            return bool(rows) and rows[0]["pid"] != before["two"][0]["pid"]

        served.wait_for("two restarted", two_restarted)
        served.wait_for("two ready", lambda: served.sidecars("two")[0]["state"] == "ready")
        status = cli("status", "-o", "json", "--server", served.url)
        assert status.returncode == 0, status.stderr
        rows = {row["model"]: row for row in json.loads(status.stdout)["sidecars"] if row["pid"]}
        assert rows["one"]["pid"] == before["one"][0]["pid"]  # untouched
        assert rows["one"]["restarts"] == 0
        assert rows["two"]["pid"] != before["two"][0]["pid"]
        assert "--ctx-size" in rows["two"]["argv"]
        assert rows["two"]["argv"][rows["two"]["argv"].index("--ctx-size") + 1] == "256"

        again = cli("diff", "-f", str(checkout), "--server", served.url)
        assert again.returncode == 0, again.stdout
