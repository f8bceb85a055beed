"""``llamasup import llama-swap``: fixtures in llama-swap's documented syntax → profiles.

Each fixture imports, the output loads as a profile set, every model resolves to the exact
argv llama-swap would have run (minus --host/--port, which llamasup owns), and each lost or
changed behaviour is reported at its input key path.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from llamasup.cli.main import main
from llamasup.migrate.draft import InputError
from llamasup.profiles.load import load_profiles
from llamasup.spec.resolve import resolve

from .import_helpers import (
    SWAP_FIXTURES,
    import_swap_fixture,
    import_swap_text,
    serve_and_chat_via_llamasup,
)

MACRO_ENV = {
    "LLAMA_BIN": "/opt/llama/llama-server",
    "TEMPLATES": "/etc/templates",
    "THREADS": "6",
    "EXTRA_ARGS": "-ngl 20 --mlock",
}
BIN = "/opt/llama.cpp/bin/llama-server"


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


# -- basic: no groups, shared flags, lifecycle settings ---------------------------------------


def test_basic_models_resolve_to_the_same_argv(tmp_path: Path) -> None:
    result = import_swap_fixture("basic.yaml", tmp_path)
    assert result.argv("qwen3-8b") == [
        BIN, "--model", "/models/Qwen3-8B-Q4_K_M.gguf",
        "--jinja", "--ctx-size", "16384", "--n-gpu-layers", "99", "--alias", "qwen3-8b",
    ]  # fmt: skip
    assert result.argv("gemma3-4b") == [
        BIN, "--model", "/models/gemma-3-4b-it-Q4_K_M.gguf",
        "--jinja", "--ctx-size", "8192", "--n-gpu-layers", "99", "--alias", "gemma3-4b",
    ]  # fmt: skip
    assert result.argv("embed") == [
        BIN, "--model", "/models/nomic-embed-text-v1.5.Q8_0.gguf",
        "--jinja", "--ctx-size", "2048", "--embeddings", "--n-gpu-layers", "99",
        "--alias", "embed",
    ]  # fmt: skip


def test_basic_shared_flags_become_base_args(tmp_path: Path) -> None:
    result = import_swap_fixture("basic.yaml", tmp_path)
    server = result.draft.server
    assert server["base_args"] == ["-ngl", "99", "--jinja"]
    assert server["binary"] == BIN
    assert result.draft.models["qwen3-8b"].fields["args"] == ["-c", "16384"]
    assert "binary" not in result.draft.models["embed"].fields


def test_shared_flags_stay_per_model_when_moving_them_would_change_argv(tmp_path: Path) -> None:
    # --mmap with --mlock in one layer is mmap+mlock; split across layers the model's --mlock
    # would replace the base's --mmap: the importer notices and keeps the flags where they were
    config = """
    models:
      a: {cmd: "llama-server --port ${PORT} -m /a.gguf --mmap --mlock"}
      b: {cmd: "llama-server --port ${PORT} -m /b.gguf --mmap"}
    """
    result = import_swap_text(dedent(config), tmp_path)
    assert "base_args" not in result.draft.server
    assert result.argv("a")[3:5] == ["--load-mode", "mmap+mlock"]
    assert result.argv("b")[3:5] == ["--load-mode", "mmap"]


def test_basic_lifecycle_and_server_settings(tmp_path: Path) -> None:
    result = import_swap_fixture("basic.yaml", tmp_path)
    server, models = result.profiles.server, result.profiles.models
    assert server.max_sidecars == 1  # no groups: llama-swap ran one model at a time
    assert server.ports == (9100, 9199)
    assert server.start_timeout == server.health_timeout == 300
    assert server.idle_ttl == 900
    assert server.log_level == "warning"
    assert models["qwen3-8b"].ttl is None  # ttl: 0 → never, against globalTTL 900
    assert models["embed"].ttl == 60
    assert models["gemma3-4b"].ttl == 900
    assert models["qwen3-8b"].aliases == ("qwen", "gpt-4o-mini")
    assert models["qwen3-8b"].env == (("CUDA_VISIBLE_DEVICES", "0"),)
    assert models["qwen3-8b"].preload and models["embed"].preload  # "qwen" is an alias
    assert not models["gemma3-4b"].preload
    gemma = models["gemma3-4b"]
    assert (gemma.concurrency, gemma.queue, gemma.unlisted) == (4, 0, True)
    assert gemma.upstream_model == "gemma3"
    assert result.warning_paths == ["hooks.on_startup.preload"]
    assert "one-at-a-time" in result.warning("hooks.on_startup.preload")


# -- macros, environment, multi-line commands ---------------------------------------------------


def test_macros_comments_backslashes_and_quoting(tmp_path: Path) -> None:
    result = import_swap_fixture("macros.yaml", tmp_path, MACRO_ENV)
    assert result.argv("coder") == [
        "/opt/llama/llama-server", "--model", "/srv/models/coder.gguf",
        "--cache-type-k", "q8_0", "--cache-type-v", "q8_0",
        "--chat-template-file", "/etc/templates/chatml tool.jinja",
        "--ctx-size", "32768",  # the model's ctx macro overrides the global one
        "--flash-attn", "on",  # bare -fa
        "--load-mode", "none",  # --no-mmap, which this llama-server build no longer has
        "--slot-save-path", "/tmp/slots/coder",  # ${MODEL_ID}
        "--alias", "coder",
    ]  # fmt: skip
    assert result.argv("tiny") == [
        "/opt/llama/llama-server", "--model", "/srv/models/tiny model.gguf",
        "--ctx-size", "8192", "--flash-attn", "on", "--load-mode", "none", "--threads", "6",
        "--alias", "tiny",
    ]  # fmt: skip


def test_environment_references_stay_references(tmp_path: Path) -> None:
    result = import_swap_fixture("macros.yaml", tmp_path, MACRO_ENV)
    assert result.draft.server["binary"] == "${env.LLAMA_BIN}"
    assert "${env.TEMPLATES}/chatml tool.jinja" in result.draft.models["coder"].fields["args"]
    assert result.draft.models["tiny"].fields["args"][-2:] == ["-t", "${env.THREADS}"]
    assert "/etc/templates" not in result.text


def test_an_environment_value_that_splits_is_written_out(tmp_path: Path) -> None:
    result = import_swap_fixture("macros.yaml", tmp_path, MACRO_ENV)
    assert result.argv("split") == [
        "/opt/llama/llama-server", "--model", "/srv/models/split.gguf",
        "--load-mode", "mlock", "--n-gpu-layers", "20", "--alias", "split",
    ]  # fmt: skip
    assert "splits into several arguments" in result.warning("models.split.cmd")
    assert result.draft.models["split"].fields["binary"] == "/opt/llama/llama-server"


def test_unset_environment_variable_is_an_input_error(tmp_path: Path) -> None:
    env = {k: v for k, v in MACRO_ENV.items() if k != "THREADS"}
    with pytest.raises(InputError) as info:
        import_swap_fixture("macros.yaml", tmp_path, env)
    assert info.value.problems == [
        "environment variable THREADS is not set (llama-swap refuses a config that names an "
        "unset variable anywhere)"
    ]


def test_macros_must_be_defined_before_use(tmp_path: Path) -> None:
    config = """
    macros:
      a: "--ctx-size ${b}"
      b: 4096
    models:
      m: {cmd: "llama-server --port ${PORT} -m /m.gguf ${a}"}
    """
    with pytest.raises(InputError) as info:
        import_swap_text(dedent(config), tmp_path)
    assert info.value.problems == ["models.m.cmd: unknown macro ${b}"]


def test_macro_names_are_checked(tmp_path: Path) -> None:
    config = """
    macros: {PORT: 1, "bad name": 2}
    models:
      m: {cmd: "llama-server --port ${PORT} -m /m.gguf"}
    """
    with pytest.raises(InputError) as info:
        import_swap_text(dedent(config), tmp_path)
    assert "macros.PORT: PORT is reserved (llama-swap sets it)" in info.value.problems
    assert any(p.startswith("macros.bad name:") for p in info.value.problems)


def test_wrong_types_are_input_errors_listed_together(tmp_path: Path) -> None:
    config = """
    startPort: many
    models:
      m:
        cmd: llama-server --port ${PORT} -m /m.gguf
        aliases: just-one
        ttl: "60"
        env: {A: 1}
    groups:
      g: {members: m}
    hooks: {on_startup: {preload: m}}
    """
    with pytest.raises(InputError) as info:
        import_swap_text(dedent(config), tmp_path)
    assert info.value.problems == [
        "startPort: expected a whole number, got 'many'",
        "models.m.ttl: expected a whole number, got '60'",
        "models.m.aliases: expected a list, got 'just-one'",
        "models.m.env: expected a list, got {'A': 1}",
        "groups.g.members: expected a list, got 'm'",
        "hooks.on_startup.preload: a list of model ids",
    ]


def test_numbers_written_as_environment_references(tmp_path: Path) -> None:
    config = """
    globalTTL: ${env.TTL}
    models:
      m:
        cmd: llama-server --port ${PORT} -m /m.gguf
        unlisted: ${env.HIDDEN}
    """
    result = import_swap_text(dedent(config), tmp_path, {"TTL": "300", "HIDDEN": "true"})
    assert result.profiles.server.idle_ttl == 300
    assert result.profiles.models["m"].unlisted


# -- groups, command models ---------------------------------------------------------------------


def test_groups_keep_swap_exclusive_and_persistent(tmp_path: Path) -> None:
    result = import_swap_fixture("groups.yaml", tmp_path)
    groups, models = result.profiles.groups, result.profiles.models
    assert {n: (g.max_running, g.exclusive, g.persistent) for n, g in groups.items()} == {
        "big": (1, True, False),
        "always-on": (2, False, True),
        "audio": (3, False, False),
        # llama-swap's implicit default group: swap and exclusive
        "swap-default": (1, True, False),
    }
    assert {m.id: m.group for m in models.values()} == {
        "llama-70b": "big",
        "qwen-32b": "big",
        "embed": "always-on",
        "rerank": "always-on",
        "whisper": "audio",
        "vllm": "audio",
        "llama-docker": "audio",
        "small-a": "swap-default",
        "small-b": "swap-default",
    }
    assert not any(m.pinned for m in models.values())  # persistent is not pinned (preloaded)
    assert models["rerank"].ttl == 300
    assert result.profiles.server.max_sidecars is None
    assert not [w for w in result.warning_paths if w.startswith("groups")]


def test_one_group_and_ungrouped_models_keep_llama_swaps_exclusivity(tmp_path: Path) -> None:
    """The R3 report: one declared group plus ungrouped models ran five sidecars at once
    where llama-swap keeps one loaded (every group is exclusive by default)."""
    config = """
    models:
      a: {cmd: "llama-server --port ${PORT} -m /a.gguf"}
      b: {cmd: "llama-server --port ${PORT} -m /b.gguf"}
      c: {cmd: "llama-server --port ${PORT} -m /c.gguf"}
      d: {cmd: "llama-server --port ${PORT} -m /d.gguf"}
      e: {cmd: "llama-server --port ${PORT} -m /e.gguf"}
    groups:
      pair: {swap: false, members: [a, b]}
    """
    result = import_swap_text(dedent(config), tmp_path)
    groups, models = result.profiles.groups, result.profiles.models
    assert (groups["pair"].max_running, groups["pair"].exclusive) == (2, True)
    default = groups["swap-default"]
    assert (default.max_running, default.exclusive, default.persistent) == (1, True, False)
    assert [m.group for m in models.values()] == ["pair", "pair"] + ["swap-default"] * 3


def test_command_models_keep_their_argv_with_a_port_placeholder(tmp_path: Path) -> None:
    result = import_swap_fixture("groups.yaml", tmp_path)
    assert result.argv("whisper") == [
        "/opt/whisper.cpp/build/bin/whisper-server", "--host", "127.0.0.1",
        "--port", "${PORT}", "-m", "/m/ggml-base.en.bin",
    ]  # fmt: skip
    assert result.argv("vllm") == [
        "docker", "run", "--rm", "--gpus", "all", "--name", "vllm",
        "-p", "${PORT}:8000", "vllm/vllm-openai:latest", "--model", "Qwen/Qwen3-0.6B",
    ]  # fmt: skip
    models = result.profiles.models
    assert models["whisper"].health == "/"
    assert models["vllm"].health == "/v1/models"
    assert models["llama-docker"].health == "/health"
    assert "became ${PORT}" in result.warning("models.whisper.proxy")
    assert "probes /" in result.warning("models.whisper.checkEndpoint")
    assert "SIGTERM" in result.warning("models.vllm.cmdStop")
    assert "llama.cpp's server image" in "\n".join(result.draft.models["llama-docker"].notes)


def test_a_command_without_any_port_is_written_commented_out(tmp_path: Path) -> None:
    config = """
    models:
      fixed:
        cmd: /opt/tts/server --listen 0.0.0.0:5000
        proxy: http://127.0.0.1:9000
      ok:
        cmd: llama-server --port ${PORT} -m /m/ok.gguf
    """
    result = import_swap_text(dedent(config), tmp_path)
    assert sorted(result.profiles.models) == ["ok"]
    assert "port 9000 (from proxy), which is neither ${PORT}" in result.warning("models.fixed.cmd")
    assert "  # fixed:\n  #   command: [/opt/tts/server, --listen, 0.0.0.0:5000]" in result.text


def test_matrix_has_no_equivalent_and_sets_no_global_limit(tmp_path: Path) -> None:
    config = """
    models:
      a: {cmd: "llama-server --port ${PORT} -m /a.gguf"}
      b: {cmd: "llama-server --port ${PORT} -m /b.gguf"}
    matrix:
      vars: {a: a, b: b}
      sets: {both: "a & b"}
    """
    result = import_swap_text(dedent(config), tmp_path)
    assert "no solver" in result.warning("matrix")
    assert result.profiles.server.max_sidecars is None
    with pytest.raises(InputError):
        import_swap_text(dedent(config) + "groups: {g: {members: [a]}}\n", tmp_path)


# -- filters, API keys, ids, fallbacks ---------------------------------------------------------


def test_filters_become_forced_and_stripped_request_parameters(tmp_path: Path) -> None:
    result = import_swap_fixture("filters.yaml", tmp_path, {"TEAM_KEY": "k"})
    assert result.argv("gpt-oss-20b") == [
        "llama-server", "--model", "/m/gpt-oss-20b.gguf",
        "--jinja", "--temp", "0.6",  # the cmd's own default stays; setParams forces over it
        "--alias", "gpt-oss-20b",
    ]  # fmt: skip
    model = resolve(result.profiles, "gpt-oss-20b")
    forced = {"temperature": 1.0, "top_p": 1.0, "provider": {"zdr": True}}
    assert dict(model.request_force) == forced
    assert model.request_strip == ("temperature", "top_p")
    # the variants share the model's sidecar and force their own values over the model's
    high = resolve(result.profiles, "gpt-oss-20b:high")
    assert high.spec.key == model.spec.key
    assert dict(high.request_force) == {
        **forced,
        "chat_template_kwargs": {"reasoning_effort": "high"},
        "max_tokens": 4096,
    }
    low = resolve(result.profiles, "gpt-oss-20b", "gpt-oss-20b:low")
    assert low.request_force["chat_template_kwargs"] == {"reasoning_effort": "low"}
    prefix = "models.gpt-oss-20b.filters"
    assert not [w for w in result.warning_paths if w.startswith(prefix)]
    # the explicit alias of the same name would route without the parameters: removed
    assert result.profiles.models["gpt-oss-20b"].aliases == ("gpt-oss",)


def test_filter_keys_that_are_json_paths_are_reported(tmp_path: Path) -> None:
    config = """
    models:
      m:
        cmd: llama-server --port ${PORT} -m /m.gguf
        filters:
          stripParams: "seed, a.b"
          setParams: {"chat_template_kwargs.enable_thinking": false, top_k: 5}
    """
    result = import_swap_text(dedent(config), tmp_path)
    resolved = resolve(result.profiles, "m")
    assert (dict(resolved.request_force), resolved.request_strip) == ({"top_k": 5}, ("seed",))
    assert "JSON paths" in result.warning("models.m.filters.stripParams")
    path = "models.m.filters.setParams.chat_template_kwargs.enable_thinking"
    assert "JSON paths" in result.warning(path)


def test_api_keys_are_never_written(tmp_path: Path) -> None:
    result = import_swap_fixture("filters.yaml", tmp_path, {"TEAM_KEY": "k"})
    keys = result.profiles.server.api_keys
    assert [(k.name, k.env, k.scope) for k in keys] == [
        ("llama-swap-1", "LLAMASUP_API_KEY_1", "inference"),
        ("llama-swap-2", "TEAM_KEY", "inference"),
    ]
    assert "sk-local-secret-1" not in result.text
    assert "sk-upstream-secret" not in result.text
    assert "sk-upstream-secret" not in json.dumps([w.as_dict() for w in result.draft.warnings])
    assert "LLAMASUP_API_KEY_1" in result.warning("apiKeys[0]")
    assert "llamasup sets this flag itself" in result.warning("models.gpt-oss-20b.cmd")
    assert result.draft.secrets == {"LLAMASUP_API_KEY_1": "the key written in apiKeys[0]"}


def test_unknown_flags_fall_back_to_a_command_model(tmp_path: Path) -> None:
    result = import_swap_fixture("filters.yaml", tmp_path, {"TEAM_KEY": "k"})
    model = result.profiles.models["Qwen-Qwen3-8B"]
    assert model.is_command and model.health == "/health"
    assert result.argv("Qwen-Qwen3-8B") == [
        "llama-server", "--port", "${PORT}", "-m", "/m/qwen3-8b.gguf", "--some-future-flag", "3",
    ]  # fmt: skip
    assert "--some-future-flag" in result.warning("models.Qwen/Qwen3 8B.cmd")
    assert "unknown llama-swap model setting" in result.warning("models.Qwen/Qwen3 8B.unknownKey")
    renamed = [w.message for w in result.draft.warnings if w.path == "models.Qwen/Qwen3 8B"]
    assert any("imported as 'Qwen-Qwen3-8B'" in m for m in renamed)
    assert any("not a valid alias" in m for m in renamed)


def test_invalid_ids_keep_the_original_as_alias_when_possible(tmp_path: Path) -> None:
    config = """
    models:
      "org/model@q4":
        cmd: llama-server --port ${PORT} -m /m/x.gguf --alias x-alias,org/model
    """
    result = import_swap_text(dedent(config), tmp_path)
    assert list(result.profiles.models) == ["org-model-q4"]
    # '@' is not allowed in aliases either; --alias values become aliases
    assert result.profiles.models["org-model-q4"].aliases == ("x-alias", "org/model")


def test_owned_environment_and_remote_hosts_are_reported(tmp_path: Path) -> None:
    config = """
    models:
      m:
        cmd: env GGML_CUDA_NO_PINNED=1 llama-server --host 0.0.0.0 --port 9999 -m /m.gguf
        proxy: http://127.0.0.1:9999
        env: ["LLAMA_ARG_PORT=1234", "HIP_VISIBLE_DEVICES=1"]
    """
    result = import_swap_text(dedent(config), tmp_path)
    model = result.profiles.models["m"]
    assert model.env == (("GGML_CUDA_NO_PINNED", "1"), ("HIP_VISIBLE_DEVICES", "1"))
    assert "which llamasup owns" in result.warning("models.m.env[0]")
    cmd = [w.message for w in result.draft.warnings if w.path == "models.m.cmd"]
    assert any(m.startswith("--host 0.0.0.0 dropped") for m in cmd)
    assert any(m.startswith("--port 9999 dropped") for m in cmd)
    assert "ignored" in result.warning("models.m.proxy")


def test_every_documented_setting_is_converted_or_reported(tmp_path: Path) -> None:
    result = import_swap_fixture("documented.yaml", tmp_path, {"SWAP_KEY": "s"})
    reported = set(result.warning_paths)
    for key in (
        "logTimeFormat", "logToStdout", "metricsMaxInMemory", "captureBuffer",
        "sendLoadingState", "includeAliasesInList", "logRequests", "peers", "profiles",
        "models.everything.cmdStop", "models.everything.name", "models.everything.metadata",
        "models.everything.timeouts", "models.everything.sendLoadingState",
    ):  # fmt: skip
        assert key in reported, key
    assert not [w for w in result.draft.warnings if "unknown llama-swap" in w.message]
    assert "peer-secret-value" not in json.dumps([w.as_dict() for w in result.draft.warnings])
    server, model = result.profiles.server, result.profiles.models["everything"]
    assert server.start_timeout == 15  # llama-swap's minimum
    assert (server.log_level, server.idle_ttl, server.ports) == ("debug", 600, (7000, 7099))
    assert model.description == "Everything: all the model settings"
    assert (model.ttl, model.unlisted, model.upstream_model) == (120, True, "upstream-name")
    assert (model.concurrency, model.queue, model.preload) == (2, 0, True)
    assert model.aliases == ("every", "all")
    assert (model.request.force, model.request.strip) == ({"top_k": 40}, ("seed",))
    pair = result.profiles.groups["pair"]
    assert (pair.max_running, pair.exclusive) == (2, True)
    greedy = resolve(result.profiles, "everything-greedy")
    assert dict(greedy.request_force) == {"top_k": 40, "temperature": 0}


def test_public_listen_without_keys_is_explicit(tmp_path: Path) -> None:
    config = """
    startPort: 8400
    models:
      m: {cmd: "llama-server --port ${PORT} -m /m.gguf"}
    """
    result = import_swap_text(dedent(config), tmp_path, listen="0.0.0.0:8402")
    server = result.profiles.server
    assert (server.listen_host, server.listen_port, server.allow_public_listen) == (
        "0.0.0.0",
        8402,
        True,
    )
    assert server.ports == (8403, 8502)  # moved off the listen port
    assert "serves anyone" in result.warning("apiKeys")
    assert "moved the sidecar range" in result.warning("startPort")


def test_directory_layout_one_file_per_model(tmp_path: Path) -> None:
    result = import_swap_fixture("filters.yaml", tmp_path, {"TEAM_KEY": "k"}, layout="dir")
    assert sorted(result.files) == [
        "00-server.yaml",
        "10-Qwen-Qwen3-8B.yaml",
        "10-gpt-oss-20b.yaml",
        "agents.yaml",
    ]
    assert result.files["10-gpt-oss-20b.yaml"].startswith("models:\n")
    assert sorted(result.profiles.agents) == ["gpt-oss-20b:high", "gpt-oss-20b:low"]


# -- the command line ---------------------------------------------------------------------------


def test_cli_writes_a_valid_profile_and_lists_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "profiles.yaml"
    code = main(["import", "llama-swap", str(SWAP_FIXTURES / "groups.yaml"), "-o", str(out)])
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: models.vllm.cmdStop: no equivalent" in err
    assert "imported 9 models" in err
    assert sorted(load_profiles(out, {}).models)[0] == "embed"
    assert main(["render", "whisper", "-f", str(out)]) == 0
    assert "--port '<port>'" in capsys.readouterr().out


def test_cli_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["import", "llama-swap", str(SWAP_FIXTURES / "basic.yaml"), "--output", "json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["written"] == []  # stdout: the profile is in the report
    assert report["profile"].startswith("# Imported from")
    assert report["warnings"] == [
        {"path": "hooks.on_startup.preload", "message": report["warnings"][0]["message"]}
    ]
    assert report["models"]["embed"]["argv"][:3] == [
        BIN,
        "--model",
        "/models/nomic-embed-text-v1.5.Q8_0.gguf",
    ]
    assert report["models"]["embed"]["argv"][-2:] == ["--port", "<port>"]


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m: {cmd: 'llama-server ${nope}'}\n", encoding="utf-8")
    assert main(["import", "llama-swap", str(bad)]) == 1
    assert "error: models.m.cmd: unknown macro ${nope}" in capsys.readouterr().err
    bad.write_text("models: [\n", encoding="utf-8")
    assert main(["import", "llama-swap", str(bad), "--output", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["exit_code"] == 1
    assert main(["import", "llama-swap", str(tmp_path / "missing.yaml")]) == 2
    assert main(["import", "llama-swap", str(bad), "--listen", "nope"]) == 2
    assert main(["import", "llama-swap"]) == 2
    capsys.readouterr()


def test_cli_directory_output_refuses_to_mix_or_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "profiles"
    config = str(SWAP_FIXTURES / "basic.yaml")
    assert main(["import", "llama-swap", config, "-o", f"{target}/"]) == 0
    assert sorted(p.name for p in target.iterdir()) == [
        "00-server.yaml", "10-embed.yaml", "10-gemma3-4b.yaml", "10-qwen3-8b.yaml",
    ]  # fmt: skip
    assert main(["import", "llama-swap", config, "-o", f"{target}/"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["import", "llama-swap", config, "-o", f"{target}/", "--force"]) == 0
    (target / "stale.yaml").write_text("models: {}\n", encoding="utf-8")
    assert main(["import", "llama-swap", config, "-o", str(target), "--force"]) == 2
    assert "stale.yaml" in capsys.readouterr().err


# -- end to end: the imported profile runs the real llama-server, and serves through llamasup ---

E2E_CONFIG = """
macros:
  server: ${env.LLAMA_SERVER_BIN} --port ${PORT} --host 127.0.0.1
models:
  tiny:
    cmd: |
      ${server}
        -m ${env.TINY_MODEL}
        # small enough for a 2-core CI machine
        -c 512 -np 1 -t 2 -fa off --no-mmap
    aliases: [default]
    ttl: 300
"""


def e2e_environ(binary: str, model: str) -> dict[str, str]:
    """The variables E2E_CONFIG references (the imported profile keeps the references)."""
    return {"LLAMA_SERVER_BIN": binary, "TINY_MODEL": model}


def import_e2e_config(tmp_path: Path, binary: str, model: str) -> tuple[Path, list[str]]:
    """Import a config that runs llama-server on a tiny model; return the profile and argv."""
    result = import_swap_text(dedent(E2E_CONFIG), tmp_path, e2e_environ(binary, model))
    path = tmp_path / "profiles.yaml"
    path.write_text(result.files["profiles.yaml"], encoding="utf-8")
    return path, result.argv("tiny")


def test_e2e_import_half(tmp_path: Path) -> None:
    _, argv = import_e2e_config(tmp_path, "/usr/local/bin/llama-server", "/tmp/tiny.gguf")
    assert argv == [
        "/usr/local/bin/llama-server", "--model", "/tmp/tiny.gguf",
        "--ctx-size", "512", "--flash-attn", "off", "--load-mode", "none", "--parallel", "1",
        "--threads", "2", "--alias", "tiny",
    ]  # fmt: skip


@pytest.mark.e2e
def test_e2e_imported_argv_starts_a_real_llama_server(
    tmp_path: Path, llama_server_bin: Path, tiny_model: Path
) -> None:
    """The translated argv (--load-mode for --no-mmap, ...) is accepted by the real binary."""
    _, argv = import_e2e_config(tmp_path, str(llama_server_bin), str(tiny_model))
    with subprocess.Popen(
        [*argv, "--host", "127.0.0.1", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stderr is not None
            deadline, port = time.monotonic() + 60, None
            for line in process.stderr:
                if found := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
                    port = int(found.group(1))
                    break
                assert time.monotonic() < deadline, "llama-server did not start in time"
            assert port is not None, f"llama-server exited with {process.wait()}"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
                assert answer.status == 200
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.e2e
def test_e2e_chat_completion_through_llamasup(
    tmp_path: Path, llama_server_bin: Path, tiny_model: Path
) -> None:
    binary, model = str(llama_server_bin), str(tiny_model)
    profile, _ = import_e2e_config(tmp_path, binary, model)
    assert "${env.LLAMA_SERVER_BIN}" in profile.read_text("utf-8")
    response = serve_and_chat_via_llamasup(profile, "tiny", e2e_environ(binary, model))
    assert response["object"] == "chat.completion"
    assert response["model"] == "tiny"
    assert response["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(response["choices"][0]["message"]["content"], str)
    assert 0 < response["usage"]["completion_tokens"] <= 8


def test_variant_ids_keep_working_and_may_not_name_another_model(tmp_path: Path) -> None:
    config = """
    models:
      other:
        cmd: llama-server --port ${PORT} -m /models/other.gguf
        aliases: [fast]
      qwen:
        cmd: llama-server --port ${PORT} -m /models/qwen.gguf
        filters:
          setParamsByID:
            "qwen:think": {temperature: 0.6}
    """
    result = import_swap_text(dedent(config), tmp_path)
    think = resolve(result.profiles, "qwen:think")  # the old id still routes, with its params
    assert (think.model.id, dict(think.request_force)) == ("qwen", {"temperature": 0.6})
    # llama-swap registers setParamsByID keys as aliases: one naming another model's is refused
    clash = config.replace('"qwen:think"', "fast")
    with pytest.raises(InputError) as info:
        import_swap_text(dedent(clash), tmp_path)
    assert info.value.problems == [
        "models.qwen.filters.setParamsByID.fast: already an alias of 'other' (llama-swap refuses)"
    ]


def test_cli_a_config_whose_only_model_is_lost_still_imports_with_its_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "models:\n  tts: {cmd: /opt/tts/server, proxy: 'http://127.0.0.1:5002'}\n", "utf-8"
    )
    out = tmp_path / "mine.yaml"
    assert main(["import", "llama-swap", str(config), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: models.tts.cmd: not imported: it listens on port 5002" in err
    assert "imported 0 models" in err and f"→ {out}" in err
    assert load_profiles(out, {}).models == {}


def test_cli_relative_paths_resolve_against_the_workdir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "models:\n  m: {cmd: './bin/llama-server --port ${PORT} -m models/m.gguf'}\n", "utf-8"
    )
    out = tmp_path / "out" / "profiles.yaml"
    code = main(["import", "llama-swap", str(config), "-o", str(out), "--workdir", "/srv/swap"])
    assert code == 0
    assert "written as /srv/swap/bin/llama-server" in capsys.readouterr().err
    model = load_profiles(out, {}).models["m"]
    assert str(model.path) == "/srv/swap/models/m.gguf"
