"""``host_issues`` and ``startable_issues``: what a host lacks to start a model, and which
models a profile change makes it matter for."""

from __future__ import annotations

import os
from pathlib import Path

from profile_helpers import load, write

from llamasup.spec.hostcheck import host_issues, startable_issues


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_a_change_is_checked_for_what_it_starts_or_replaces(tmp_path: Path) -> None:
    binary = _executable(tmp_path / "bin" / "llama-server")
    for name in ("a", "b"):
        (tmp_path / f"{name}.gguf").write_bytes(b"GGUF")
    current = load(
        write(
            tmp_path / "old" / "p.yaml",
            f"""
            server: {{binary: {binary}}}
            models:
              a: {{path: ../a.gguf}}
              b: {{path: ../b.gguf}}
              gone: {{path: ../gone.gguf}}
            """,
        )
    )
    candidate = load(
        write(
            tmp_path / "new" / "p.yaml",
            f"""
            server: {{binary: {binary}}}
            models:
              a: {{path: ../a.gguf, args: [-c, "1024"]}}
              b: {{path: ../b.gguf}}
              gone: {{path: ../gone.gguf}}
              later: {{path: ../later.gguf}}
              now: {{path: ../now.gguf, preload: true}}
            """,
        )
    )
    (tmp_path / "a.gguf").unlink()  # a changes: its new sidecar would fail
    # gone is unchanged (already missing: no worse), later starts on demand only
    issues = startable_issues(current, candidate, os.environ)
    assert [(i.path, i.line) for i in issues] == [("models.a.path", 3), ("models.now.path", 7)]
    assert all("does not exist" in i.message for i in issues)


def test_one_cause_of_many_models_is_one_issue(tmp_path: Path) -> None:
    profiles = load(
        write(
            tmp_path / "p.yaml",
            """
            server:
              binary: llama-server-not-installed-here
            models:
              a: {command: [./run-a.sh, "${PORT}"]}
              b: {path: b.gguf}
              c: {path: c.gguf}
              d: {command: [my-upstream, "${PORT}"], env: {PATH: "%s"}}
            """
            % (tmp_path / "bin"),
        )
    )
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    _executable(tmp_path / "bin" / "my-upstream")  # on the PATH the model's env sets
    issues = host_issues(profiles, {"PATH": "/nonexistent"})
    rows = [(i.line, i.path, i.message.rsplit(" (needed", 1)[1]) for i in issues]
    assert rows == [
        (4, "models.a.command", " to start a)"),
        (2, "server.binary", " to start b, c)"),
        (6, "models.c.path", " to start c)"),
    ]
    assert f"program {tmp_path / 'run-a.sh'} does not exist" in issues[0].message
    assert "'llama-server-not-installed-here' from profile is not on PATH" in issues[1].message
