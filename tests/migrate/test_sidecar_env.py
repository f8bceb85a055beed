"""``llamasup import sidecar-env``: llama-sidecar's environment → profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamasup.cli.main import main
from llamasup.migrate.draft import InputError
from llamasup.migrate.emit import render_single, validate
from llamasup.migrate.sidecar_env import import_sidecar_env
from llamasup.profiles.load import load_profiles
from llamasup.profiles.types import Profiles
from llamasup.spec.resolve import resolve

BIN = "/opt/llama.cpp/llama-server"


def model_map(tmp_path: Path, mapping: dict[str, str], *, bom: bool = False) -> Path:
    path = tmp_path / "models.json"
    data = json.dumps(mapping).encode("utf-8")
    path.write_bytes(b"\xef\xbb\xbf" + data if bom else data)
    return path


def convert(tmp_path: Path, env: dict[str, str]) -> tuple[Profiles, list[str]]:
    draft = import_sidecar_env(env, source="test")
    profiles = validate(render_single(draft), tmp_path, {})
    return profiles, [str(w) for w in draft.warnings]


def argv(profiles: Profiles, model: str) -> list[str]:
    spec = resolve(profiles, model).spec
    return [spec.binary, *spec.args]


def test_defaults_and_a_bom_in_the_model_map(tmp_path: Path) -> None:
    path = model_map(tmp_path, {"qwen3-coder": "/models/qwen3-coder.gguf"}, bom=True)
    env = {"LLAMA_SERVER_BIN": BIN, "MODEL_DIR_MAP_FILE": str(path)}
    profiles, _ = convert(tmp_path, env)
    server = profiles.server
    assert (server.listen_host, server.listen_port) == ("127.0.0.1", 8402)
    assert server.ports == (8500, 8599)
    assert server.max_sidecars == 2
    assert (server.health_timeout, server.start_timeout, server.health_interval) == (60, 60, 30)
    assert server.log_level == "info"
    assert server.binary == BIN
    # the default BASE_ARGS: --no-mmap does not exist in this llama-server build; the flag
    # model passes --load-mode none instead
    assert argv(profiles, "qwen3-coder") == [
        BIN, "--model", "/models/qwen3-coder.gguf",
        "--ctx-size", "32768", "--flash-attn", "on", "--load-mode", "none",
        "--n-gpu-layers", "999", "--alias", "qwen3-coder",
    ]  # fmt: skip
    assert "--no-mmap" not in argv(profiles, "qwen3-coder")


def test_defaults_are_written_explicitly(tmp_path: Path) -> None:
    path = model_map(tmp_path, {"m": "/m.gguf"})
    draft = import_sidecar_env(
        {"LLAMA_SERVER_BIN": BIN, "MODEL_DIR_MAP_FILE": str(path)}, source="test"
    )
    text = render_single(draft)["profiles.yaml"]
    assert "base_args: [-ngl, 999, -c, 32768, --flash-attn, on, --no-mmap]" in text
    assert "# llama-sidecar's default for BASE_ARGS" in text
    assert "listen: 127.0.0.1:8402" in text


def test_settings_from_the_environment(tmp_path: Path) -> None:
    path = model_map(tmp_path, {"a": "/a.gguf", "b": "/b.gguf"})
    env = {
        "LLAMA_SERVER_BIN": BIN,
        "MODEL_DIR_MAP_FILE": str(path),
        "LLAMA_SIDECAR_BIND": "127.0.0.1:9400",
        "PORT_RANGE": "9500-9549",
        "MAX_SIDECARS": "3",
        "LOG_LEVEL": "warn",
        "BASE_ARGS": '["-ngl", "0", "-fa", "-c", "4096", "--port", "1"]',
        "HEALTH_TIMEOUT_SECONDS": "120",
        "HEALTH_INTERVAL_SECONDS": "15",
    }
    profiles, warnings = convert(tmp_path, env)
    server = profiles.server
    assert (server.listen_port, server.ports, server.max_sidecars) == (9400, (9500, 9549), 3)
    assert (server.health_timeout, server.start_timeout, server.health_interval) == (120, 120, 15)
    assert server.log_level == "warning"
    assert argv(profiles, "a") == [
        BIN, "--model", "/a.gguf",
        "--ctx-size", "4096", "--flash-attn", "on", "--n-gpu-layers", "0", "--alias", "a",
    ]  # fmt: skip
    assert any(w.startswith("BASE_ARGS: --port 1: not imported") for w in warnings)


def test_base_args_as_plain_words(tmp_path: Path) -> None:
    path = model_map(tmp_path, {"a": "/a.gguf"})
    env = {"LLAMA_SERVER_BIN": BIN, "MODEL_DIR_MAP_FILE": str(path), "BASE_ARGS": "-ngl 0 -c 4096"}
    profiles, _ = convert(tmp_path, env)
    assert argv(profiles, "a") == [
        BIN, "--model", "/a.gguf", "--ctx-size", "4096", "--n-gpu-layers", "0", "--alias", "a",
    ]  # fmt: skip


def test_agent_flags_header_stays_enabled(tmp_path: Path) -> None:
    path = model_map(tmp_path, {"m": "/m.gguf"})
    profiles, warnings = convert(
        tmp_path, {"LLAMA_SERVER_BIN": BIN, "MODEL_DIR_MAP_FILE": str(path)}
    )
    assert profiles.server.agent_flags_enabled
    assert {"--cache-type-k", "--ctx-size"} <= profiles.server.agent_flags_allow_load
    assert any(w.startswith("X-Agent-Flags: llama-sidecar accepted any") for w in warnings)


def test_invalid_model_ids_are_renamed_visibly(tmp_path: Path) -> None:
    mapping = {"org/model": "/o.gguf", "qwen3 coder": "/q.gguf", "qwen3-coder": "/q2.gguf"}
    path = model_map(tmp_path, mapping)
    profiles, warnings = convert(
        tmp_path, {"LLAMA_SERVER_BIN": BIN, "MODEL_DIR_MAP_FILE": str(path)}
    )
    assert sorted(profiles.models) == ["org-model", "qwen3-coder", "qwen3-coder-2"]
    assert profiles.models["org-model"].aliases == ("org/model",)  # clients keep their id
    assert profiles.models["qwen3-coder-2"].aliases == ()  # a space is not allowed in aliases
    assert profiles.find_model("org/model") is profiles.models["org-model"]
    where = f"MODEL_DIR_MAP_FILE ({path})"
    assert (
        f"{where}: org/model: not a valid llamasup model id; imported as 'org-model' with the "
        "original kept as an alias"
    ) in warnings
    assert (
        f"{where}: qwen3 coder: not a valid llamasup model id; imported as 'qwen3-coder-2'; "
        "clients must use it"
    ) in warnings


def test_public_bind_is_allowed_explicitly_and_reported(tmp_path: Path) -> None:
    path = model_map(tmp_path, {"m": "/m.gguf"})
    env = {"LLAMA_SERVER_BIN": BIN, "MODEL_DIR_MAP_FILE": str(path), "LLAMA_SIDECAR_BIND": ":8402"}
    profiles, warnings = convert(tmp_path, env)
    assert (profiles.server.listen_host, profiles.server.allow_public_listen) == ("0.0.0.0", True)
    assert any(w.startswith("LLAMA_SIDECAR_BIND: :8402 is reachable") for w in warnings)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"MODEL_DIR_MAP_FILE": "x"}, "LLAMA_SERVER_BIN is not set"),
        ({"LLAMA_SERVER_BIN": BIN, "MODEL_DIR_MAP_FILE": "{map}", "MAX_SIDECARS": "0"}, "MAX_"),
        ({"LLAMA_SERVER_BIN": BIN, "MODEL_DIR_MAP_FILE": "{map}", "PORT_RANGE": "9-1"}, "PORT_"),
        ({"LLAMA_SERVER_BIN": BIN, "MODEL_DIR_MAP_FILE": "{map}", "BASE_ARGS": "[-c"}, "BASE_"),
        ({"LLAMA_SERVER_BIN": BIN, "MODEL_DIR_MAP_FILE": "{map}", "BASE_ARGS": "-c '1"}, "BASE_"),
        ({"LLAMA_SERVER_BIN": BIN, "MODEL_DIR_MAP_FILE": "{bad}"}, "cannot read a JSON map"),
    ],
)
def test_unusable_settings_are_input_errors(
    tmp_path: Path, env: dict[str, str], problem: str
) -> None:
    good = model_map(tmp_path, {"m": "/m.gguf"})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    env = {k: v.format(map=good, bad=bad) for k, v in env.items()}
    with pytest.raises(InputError) as info:
        import_sidecar_env(env, source="test")
    assert any(problem in p for p in info.value.problems), info.value.problems


def test_cli_with_an_env_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = model_map(tmp_path, {"gemma": "/models/gemma.gguf"}, bom=True)
    env_file = tmp_path / "sidecar.env"
    env_file.write_text(
        f"# llama-sidecar service environment\nexport LLAMA_SERVER_BIN={BIN}\n"
        f'MODEL_DIR_MAP_FILE="{path}"\nMAX_SIDECARS=4\n',
        encoding="utf-8",
    )
    out = tmp_path / "profiles" / "llamasup.yaml"
    code = main(["import", "sidecar-env", "--env-file", str(env_file), "-o", str(out)])
    assert code == 0
    assert "warning: X-Agent-Flags:" in capsys.readouterr().err
    profiles = load_profiles(out, {})
    assert profiles.server.max_sidecars == 4 and list(profiles.models) == ["gemma"]
    assert main(["import", "sidecar-env", "--env-file", str(tmp_path / "none.env")]) == 2
    empty = tmp_path / "empty.env"
    empty.write_text("", encoding="utf-8")
    assert main(["import", "sidecar-env", "--env-file", str(empty), "--output", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["exit_code"] == 1 and len(report["problems"]) == 2


def test_o_json_is_not_taken_for_a_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env_file = tmp_path / "sidecar.env"
    env_file.write_text(f"LLAMA_SERVER_BIN={BIN}\nMODEL_DIR_MAP_FILE={model_map(tmp_path, {})}\n")
    assert main(["import", "sidecar-env", "--env-file", str(env_file), "-o", "json"]) == 2
    assert "--output json" in capsys.readouterr().err
    assert not (tmp_path / "json").exists()
