"""Profiles and runs for the bench and eval tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service_helpers import port_range


def profile(
    directory: Path,
    binary: Path,
    models: Mapping[str, Path],
    *,
    env: Mapping[str, Mapping[str, str]] | None = None,
    server_extra: str = "",
) -> Path:
    """A profile file of ``models`` (id -> model file) on ``binary``, with agent ``coder``."""
    lines = [
        "version: 1",
        "server:",
        f"  binary: {binary}",
        f"  ports: {port_range()}",
        f"  state_dir: {directory / 'state'}",
        "  stop_grace: 2s",
        "  start_timeout: 30s",
        *(f"  {line}" for line in server_extra.splitlines() if line.strip()),
        "models:",
    ]
    for model_id, path in models.items():
        lines += [f"  {model_id}:", f"    path: {path}"]
        variables = (env or {}).get(model_id)
        if variables:
            lines.append("    env:")
            lines += [f"      {k}: {json.dumps(v)}" for k, v in variables.items()]
    lines += ["agents:", "  coder: --temp 0.2 --top-k 20"]
    path = directory / "profiles.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def records(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line being written
        if kind is None or record.get("kind") == kind:
            found.append(record)
    return found


def llamasup(*argv: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "llamasup", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_for_records(
    process: subprocess.Popen[str], path: Path, kind: str, count: int, timeout: float = 60
) -> None:
    """Poll ``path`` until it holds ``count`` records of ``kind`` (the run still going)."""
    deadline = time.monotonic() + timeout
    while len(records(path, kind)) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no {count} {kind} records in {timeout}s"
        time.sleep(0.02)
