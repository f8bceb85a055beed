"""``llamasup validate`` and ``render``: exit codes, text and JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from profile_helpers import write

from llamasup.cli.main import main

GOOD = """
models:
  tiny: {path: tiny.gguf, aliases: [t]}
agents:
  fast: {model: tiny, flags: --temp 0.1 --top-k 5}
  long: {flags: -c 8192}
"""
BAD = """
server: {ports: 9-1}
models:
  a: {path: a.gguf, args: [--port, 1]}
  b: {pathh: b.gguf}
"""


def test_validate_valid_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "p.yaml", GOOD)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr()
    assert "valid" in out.out and "1 model, 2 agents" in out.out
    assert "does not exist" in out.err  # the warning for the missing model file


def test_validate_invalid_exits_1_listing_every_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "p.yaml", BAD)
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:1: server.ports" in err
    assert f"{path}:3: models.a.args[0]: --port" in err
    assert f"{path}:4: models.b.pathh: unknown key" in err
    assert "invalid (4 errors)" in err
    assert f"warning: {path}:3: models.a.path: model file" in err  # reported beside the errors


def test_validate_json_for_ci(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "p.yaml", BAD)
    assert main(["validate", str(path), "--output", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    first = report["errors"][0]
    assert set(first) == {"file", "line", "path", "message"}
    assert {e["path"] for e in report["errors"]} >= {"server.ports", "models.a.args[0]"}
    assert [w["path"] for w in report["warnings"]] == ["models.a.path"]
    good = write(tmp_path / "g.yaml", GOOD)
    assert main(["validate", str(good), "-o", "json"]) == 0
    ok = json.loads(capsys.readouterr().out)
    assert ok["valid"] is True and ok["models"] == ["tiny"] and ok["errors"] == []
    assert ok["warnings"][0]["path"] == "models.tiny.path"


def test_validate_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["validate", "--output", "xml"]) == 2
    assert main([]) == 2


def test_validate_defaults_to_env_then_profiles_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "profiles" / "a.yaml", GOOD)
    assert main(["validate"]) == 0
    assert "profiles: valid" in capsys.readouterr().out
    other = write(tmp_path / "elsewhere.yaml", BAD)
    monkeypatch.setenv("LLAMASUP_PROFILES", str(other))
    assert main(["validate"]) == 1


def test_render_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMA_ARG_CTX_SIZE", "1")
    path = write(tmp_path / "p.yaml", GOOD)
    assert main(["render", "t@fast", "-f", str(path)]) == 0
    out = capsys.readouterr().out
    assert "model:   tiny with agent fast" in out
    assert f"--model {tmp_path.resolve()}/tiny.gguf --alias tiny --host 127.0.0.1 --port" in out
    assert 'request defaults: {"temperature": 0.1, "top_k": 5}' in out
    assert "not inherited: LLAMA_ARG_CTX_SIZE" in out


def test_render_json_and_agent_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "p.yaml", GOOD)
    assert main(["render", "tiny", "--agent", "long", "-f", str(path), "-o", "json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["agent"] == "long"
    assert view["argv"][:1] == ["llama-server"]
    assert "--ctx-size" in view["argv"] and "8192" in view["argv"]
    assert len(view["key"]) == 16
    assert main(["render", "tiny@fast", "--agent", "long", "-f", str(path)]) == 2


def test_render_unknown_model_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "p.yaml", GOOD)
    assert main(["render", "nope", "-f", str(path)]) == 1
    assert "valid models: tiny" in capsys.readouterr().err


def test_render_and_validate_agree_on_a_missing_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.yaml")
    assert main(["render", "tiny", "-f", missing]) == 2
    assert main(["validate", missing]) == 2
    assert capsys.readouterr().err.count(f"{missing}: no such file or directory") == 2


def test_validate_warns_about_key_values_it_cannot_read_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLAMASUP_TEST_UNSET_KEY", raising=False)
    path = write(
        tmp_path / "p.yaml",
        "server:\n  api_keys:\n    - {name: ops, env: LLAMASUP_TEST_UNSET_KEY, scope: admin}\n"
        + GOOD,
    )
    assert main(["validate", str(path)]) == 0  # valid: the value may exist where serve runs
    err = capsys.readouterr().err
    assert "api key 'ops': environment variable LLAMASUP_TEST_UNSET_KEY is not set" in err
    assert "serve would not start" in err


def test_validate_warns_about_two_keys_with_one_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMASUP_TEST_K1", "same")
    monkeypatch.setenv("LLAMASUP_TEST_K2", "same")
    keys = (
        "server:\n  api_keys:\n"
        "    - {name: ops, env: LLAMASUP_TEST_K1, scope: admin}\n"
        "    - {name: app, env: LLAMASUP_TEST_K2, scope: inference}\n"
    )
    path = write(tmp_path / "p.yaml", keys + GOOD)
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "p.yaml:4: server.api_keys: api keys 'ops' and 'app' have the same value" in err


def _host(tmp_path: Path) -> tuple[Path, Path]:
    """An executable stand-in for llama-server and a model file it could load."""
    binary = tmp_path / "bin" / "llama-server"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    return binary, tmp_path / "tiny.gguf"


def test_validate_check_host_makes_a_binary_typo_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary, _ = _host(tmp_path)
    typo = f"{binary.parent}/llama-servr"
    path = write(tmp_path / "p.yaml", f"server:\n  binary: {typo}\n" + GOOD)
    assert main(["validate", str(path)]) == 0  # away from the host it cannot know
    capsys.readouterr()
    assert main(["validate", "--check-host", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"error: {path}:2: server.binary: llama-server binary from profile does not " in err
    assert f"exist: {typo}" in err and "(needed to start tiny)" in err
    assert "invalid (1 error)" in err
    # a model's own binary is named at its key; JSON says the host was checked
    own = write(tmp_path / "own.yaml", GOOD.replace("tiny: {", f"tiny: {{binary: {typo}, "))
    assert main(["validate", "--check-host", str(own), "-o", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["host_checked"] is True
    assert [(e["line"], e["path"]) for e in report["errors"]] == [(2, "models.tiny.binary")]


def test_validate_check_host_makes_a_missing_model_file_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary, model = _host(tmp_path)
    path = write(tmp_path / "p.yaml", f"server:\n  binary: {binary}\n" + GOOD)
    assert main(["validate", "--check-host", str(path)]) == 0
    assert "every model can start on this host" in capsys.readouterr().out
    model.unlink()
    assert main(["validate", str(path)]) == 0  # the default keeps it a warning
    assert f"warning: {path}:5: models.tiny.path: model file" in capsys.readouterr().err
    assert main(["validate", "--check-host", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"error: {path}:5: models.tiny.path: the model file {model} does not exist" in err
    assert "warning:" not in err  # the same finding, said once


def test_validate_check_host_looks_for_command_programs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path / "p.yaml",
        "models:\n  echo:\n    command: [no-such-program-llamasup, --port, '${PORT}']\n",
    )
    assert main(["validate", "--check-host", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:3: models.echo.command: the command's program 'no-such-program-llamasup'" in err
