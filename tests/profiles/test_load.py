"""Loading profiles: format, substitution, strictness, directories, and located errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from profile_helpers import find, issues, load, write

from llamasup.profiles.load import load_profiles

MINIMAL = """
models:
  tiny:
    path: tiny.gguf
"""


def test_minimal_profile_gets_defaults(tmp_path: Path) -> None:
    profiles = load(write(tmp_path / "p.yaml", MINIMAL))
    server = profiles.server
    assert (server.listen_host, server.listen_port) == ("127.0.0.1", 8402)
    assert server.ports == (8500, 8599)
    assert server.max_sidecars is None
    assert profiles.models["tiny"].path == (tmp_path / "tiny.gguf").resolve()
    assert profiles.agents == {}


def test_the_issue_sketch_loads(tmp_path: Path) -> None:
    profiles = load(
        write(
            tmp_path / "p.yaml",
            """
            server:
              listen: 127.0.0.1:8402
              binary: llama-server
              ports: 8500-8599
              max_sidecars: 2
              memory_budget: 20GiB
              base_args: [-ngl, 999, -c, 32768, --flash-attn, "on", --no-mmap]
            models:
              qwen3-coder:
                path: models/Qwen3-Coder-30B-A3B-Q4_K_M.gguf
                args: [--jinja, -c, 65536]
                aliases: [coder-default]
                pinned: true
              whisper:
                command: [whisper-server, --port, "${PORT}", -m, /models/ggml-base.bin]
                health: /health
            agents:
              coder:
                model: qwen3-coder
                flags: --top-k 20 --temp 0.2 --cache-type-k q8_0
              summarizer:
                flags: [--temp, 0.7]
            """,
        )
    )
    assert profiles.server.memory_budget == 20 * 2**30
    assert profiles.server.base_args.value("--load-mode") == "none"
    coder = profiles.models["qwen3-coder"]
    assert coder.pinned and coder.aliases == ("coder-default",)
    assert profiles.find_model("coder-default") is coder
    assert profiles.models["whisper"].command == (
        "whisper-server", "--port", "${PORT}", "-m", "/models/ggml-base.bin",
    )  # fmt: skip
    assert profiles.agents["coder"].model == "qwen3-coder"


def test_units_and_ttl_zero_means_never(tmp_path: Path) -> None:
    profiles = load(
        write(
            tmp_path / "p.yaml",
            """
            server: {idle_ttl: 10m, stop_grace: 500ms, health_timeout: 2, memory_budget: 8GB}
            models:
              a: {path: a.gguf}
              b: {path: b.gguf, ttl: 0}
              c: {path: c.gguf, ttl: 1h, memory: 512MiB}
              d: {path: d.gguf, pinned: true, ttl: 5m}
            """,
        )
    )
    assert profiles.server.stop_grace == 0.5
    assert profiles.server.health_timeout == 2.0
    assert profiles.server.memory_budget == 8 * 10**9
    models = profiles.models
    assert models["a"].ttl == 600.0
    assert models["b"].ttl is None
    assert models["c"].ttl == 3600.0 and models["c"].memory == 512 * 2**20
    assert models["d"].ttl is None  # pinned sidecars never idle out


def test_front_limits(tmp_path: Path) -> None:
    defaults = load(write(tmp_path / "d.yaml", MINIMAL)).server
    assert defaults.max_connections is None
    assert (defaults.client_timeouts.idle, defaults.client_timeouts.head) == (5.0, 10.0)
    assert defaults.client_timeouts.body == 30.0
    server = load(
        write(
            tmp_path / "p.yaml",
            "server: {max_connections: 500, client_timeouts: {head: 2s, body: 1m}}\n" + MINIMAL,
        )
    ).server
    assert server.max_connections == 500
    assert (server.client_timeouts.idle, server.client_timeouts.head) == (5.0, 2.0)
    assert server.client_timeouts.body == 60.0
    bad = "server: {max_connections: 0, client_timeouts: {idle: 0, bogus: 1s}}\n" + MINIMAL
    found = issues(write(tmp_path / "bad.yaml", bad))
    assert find(found, "server.max_connections")
    assert find(found, "server.client_timeouts")


def test_env_substitution(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """
        server:
          max_sidecars: ${env.N}
          base_args: [--threads, "${env.THREADS:-4}"]
        models:
          m:
            path: ${env.MODELS}/m.gguf
            description: "cost $${notenv} and ${env.N} more"
        """,
    )
    profiles = load(path, {"N": "3", "MODELS": "/srv/models"})
    assert profiles.server.max_sidecars == 3
    assert profiles.server.base_args.value("--threads") == "4"
    assert profiles.models["m"].path == Path("/srv/models/m.gguf")
    assert profiles.models["m"].description == "cost ${notenv} and 3 more"


def test_missing_env_variable_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "models:\n  m:\n    path: ${env.NOPE}/m.gguf\n")
    issue = find(issues(path), "NOPE")
    assert issue.line == 3
    assert issue.path == "models.m.path"
    assert "not set" in issue.message


def test_unset_whole_value_reports_only_the_variable(tmp_path: Path) -> None:
    """No follow-on errors (wrong type, model without a source) from an unset variable; other
    problems of the same model are still reported."""
    path = write(
        tmp_path / "p.yaml",
        "server:\n  max_sidecars: ${env.N}\nmodels:\n  m:\n    path: ${env.NOPE}\n"
        "    args: [--bogus]\n",
    )
    found = issues(path)
    assert sorted((i.path, "not set" in i.message) for i in found) == [
        ("models.m.args[0]", False),
        ("models.m.path", True),
        ("server.max_sidecars", True),
    ]


def test_unknown_placeholder_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "models:\n  m:\n    path: ${HOME}/m.gguf\n")
    assert "use ${env.NAME}" in find(issues(path), "unknown placeholder").message


def test_spawn_placeholders_only_inside_command(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """
        models:
          w: {command: [server, --listen, "${HOST}:${PORT}", --name, "${MODEL_ID}"]}
          bad: {path: "${PORT}.gguf"}
          nop: {command: [server, --no-port]}
        """,
    )
    found = issues(path)
    assert find(found, "only substituted inside a model's command").path == "models.bad.path"
    assert find(found, "must contain ${PORT}").path == "models.nop.command"


def test_command_model_id_placeholder(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml", 'models:\n  w: {command: [s, -p, "${PORT}", "${MODEL_ID}"]}\n'
    )
    assert load(path).models["w"].command == ("s", "-p", "${PORT}", "w")


def test_utf8_bom_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert "tiny" in load(path).models


def test_duplicate_keys_are_rejected_not_silently_merged(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """
        models:
          a:
            path: a.gguf
            path: b.gguf
        """,
    )
    issue = find(issues(path), "duplicate key")
    assert issue.path == "models.a.path"
    assert issue.line == 4
    assert "line 3" in issue.message


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "models:\n  a: {path: [unclosed\n")
    issue = find(issues(path), "YAML syntax error")
    assert issue.line is not None and issue.file == str(path)


def test_unknown_keys_list_what_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "models:\n  a:\n    path: a.gguf\n    pined: true\n")
    issue = find(issues(path), "unknown key 'pined'")
    assert issue.line == 4
    assert "pinned" in issue.message and "aliases" in issue.message
    assert "(did you mean 'pinned'?)" in issue.message


def test_shape_errors_say_what_is_wrong_in_words(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        "server:\n  memory_budget: 20 gigs\nagents:\n  x:\n    flag: --temp 0.2\n",
    )
    found = issues(path)
    budget = find(found, "server.memory_budget")
    assert (
        "expected bytes, or a string with a unit: 512MiB, 20GiB, 8GB, "
        "or a size per device, e.g. {host: 64G, CUDA0: 24G}, or null" in str(budget)
    )
    flag = find(found, "unknown key 'flag' (did you mean 'flags'?)")
    assert (flag.path, flag.line) == ("agents.x.flag", 5)


def test_every_error_is_reported_not_just_the_first(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """
        server:
          ports: 9000-8000
          base_args: [--host, 0.0.0.0, --bogus]
          stop_grace: soon
        models:
          a: {path: a.gguf, args: [--lora, x, -c, big]}
          b: {}
        agents:
          x: {model: nope, flags: --log-file /tmp/x}
        """,
    )
    found = issues(path)
    for needle in ("start above end", "--host", "--bogus", "stop_grace", "-c: expects an integer",
                   "needs path", "unknown model 'nope'", "--log-file"):  # fmt: skip
        find(found, needle)
    assert len(found) >= 8
    assert all(issue.line is not None for issue in found)


def test_flag_errors_point_at_the_list_item(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """
        models:
          a:
            path: a.gguf
            args:
              - -c
              - 4096
              - --port
              - 9999
        """,
    )
    issue = find(issues(path), "--port")
    assert (issue.path, issue.line) == ("models.a.args[2]", 7)


def test_public_listen_needs_keys_or_explicit_consent(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "server: {listen: 0.0.0.0:8402}\n" + MINIMAL)
    assert find(issues(path), "non-loopback").path == "server.listen"
    consent = write(
        tmp_path / "q.yaml", "server: {listen: 0.0.0.0:8402, allow_public_listen: true}\n" + MINIMAL
    )
    assert load(consent).server.listen_host == "0.0.0.0"
    keyed = write(
        tmp_path / "k.yaml",
        'server:\n  listen: "[::]:8402"\n  api_keys: [{name: ci, env: KEY, scope: admin}]\n'
        + MINIMAL,
    )
    profiles = load(keyed)
    assert profiles.server.listen_host == "::"
    assert profiles.server.api_keys[0].env == "KEY"


def test_allowed_hosts_need_keys_or_explicit_consent(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "server: {allowed_hosts: [llm.example.org]}\n" + MINIMAL)
    assert find(issues(path), "reverse proxy").path == "server.allowed_hosts"
    consent = write(
        tmp_path / "q.yaml",
        "server: {allowed_hosts: [LLM.example.org.], allow_public_listen: true}\n" + MINIMAL,
    )
    assert load(consent).server.allowed_hosts == ("llm.example.org",)


def test_api_key_needs_exactly_one_source(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        "server:\n  api_keys: [{name: a, scope: admin}, {name: b, scope: root, env: X}]\n",
    )
    found = issues(path)
    assert find(found, "exactly one of env or file").path == "server.api_keys[0]"
    assert "inference, admin" in find(found, "must be one of").message


def test_listen_port_inside_sidecar_range(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "server: {listen: 127.0.0.1:8550}\n")
    find(issues(path), "inside the sidecar port range")


def test_env_may_not_set_what_llamasup_owns(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        "models:\n  a:\n    path: a.gguf\n"
        "    env: {LLAMA_ARG_HOST: 0.0.0.0, CUDA_VISIBLE_DEVICES: 1}\n",
    )
    issue = find(issues(path), "LLAMA_ARG_HOST")
    assert "--host" in issue.message


def test_model_env_values_are_strings(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        "models:\n  a: {path: a.gguf, env: {CUDA_VISIBLE_DEVICES: 1, GGML_X: true}}\n",
    )
    assert load(path).models["a"].env == (("CUDA_VISIBLE_DEVICES", "1"), ("GGML_X", "true"))


def test_aliases_must_be_unique(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """
        models:
          a: {path: a.gguf, aliases: [shared, b]}
          b: {path: b.gguf, aliases: [shared]}
        """,
    )
    found = issues(path)
    find(found, "alias 'b' is the id of another model")
    find(found, "also an alias of model 'a'")


def test_names_cannot_contain_at_or_slash(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "models:\n  a@b: {path: a.gguf}\nagents:\n  x/y: --temp 1\n")
    found = issues(path)
    assert find(found, "'a@b'").line == 2
    assert find(found, "'x/y'").line == 4


def test_agent_shorthand_is_just_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml", MINIMAL + "agents:\n  fast: --temp 0.1\n  list: [--top-k, 3]\n"
    )
    agents = load(path).agents
    assert agents["fast"].flags.value("--temp") == "0.1"
    assert agents["list"].flags.value("--top-k") == "3"


def test_agent_default_model_may_be_an_alias(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        "models:\n  a: {path: a.gguf, aliases: [alpha]}\nagents:\n  x: {model: alpha}\n",
    )
    assert load(path).agents["x"].model == "a"


def test_model_source_rules(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        """
        models:
          hf: {args: [-hf, ggml-org/gemma-3-1b-it-GGUF]}
          both: {path: a.gguf, args: [--hf-repo, x/y]}
          cmd: {command: [s, "${PORT}"], args: [-c, 1]}
          health: {path: a.gguf, health: /ready}
        """,
    )
    found = issues(path)
    assert find(found, "both name the model").path == "models.both.args"
    assert find(found, "inside command").path == "models.cmd.args"
    assert find(found, "health applies to command models").path == "models.health.health"
    assert "hf" not in {i.path.split(".")[1] for i in found}


def test_missing_model_file_is_a_warning_not_an_error(tmp_path: Path) -> None:
    profiles = load(write(tmp_path / "p.yaml", MINIMAL))
    assert len(profiles.warnings) == 1
    assert "does not exist" in profiles.warnings[0].message
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    assert load(tmp_path / "p.yaml").warnings == ()


def test_relative_paths_resolve_against_the_declaring_file(tmp_path: Path) -> None:
    write(
        tmp_path / "profiles" / "a.yaml",
        "models:\n  a: {path: ../models/a.gguf, binary: ./bin/ls}\n",
    )
    write(tmp_path / "profiles" / "s.yaml", "server: {state_dir: state, binary: llama-server}\n")
    profiles = load(tmp_path / "profiles")
    assert profiles.models["a"].path == (tmp_path / "models" / "a.gguf").resolve()
    assert profiles.models["a"].binary == str((tmp_path / "profiles" / "bin" / "ls").resolve())
    assert profiles.server.binary == "llama-server"  # a bare name is looked up on PATH later
    assert profiles.server.state_dir == (tmp_path / "profiles" / "state").resolve()


class TestDirectories:
    def test_files_merge_in_name_order(self, tmp_path: Path) -> None:
        root = tmp_path / "profiles"
        write(root / "10-server.yaml", "server: {max_sidecars: 3}\n")
        write(root / "20-a.yml", "models:\n  a: {path: a.gguf}\n")
        write(root / "30-b.yaml", "models:\n  b: {path: b.gguf}\nagents:\n  x: {model: a}\n")
        write(root / "notes.txt", "not a profile")
        write(root / ".hidden.yaml", "bogus: [")
        profiles = load(root)
        assert sorted(profiles.models) == ["a", "b"]
        assert profiles.server.max_sidecars == 3
        assert [Path(f).name for f in profiles.files] == ["10-server.yaml", "20-a.yml", "30-b.yaml"]

    def test_an_id_defined_twice_names_both_files(self, tmp_path: Path) -> None:
        root = tmp_path / "profiles"
        write(root / "a.yaml", "models:\n  m: {path: a.gguf}\n")
        write(root / "b.yaml", "# the same id again\nmodels:\n  m: {path: b.gguf}\n")
        issue = find(issues(root), "also defined in")
        assert issue.file.endswith("b.yaml") and issue.line == 3
        assert "a.yaml:2" in issue.message

    def test_a_server_key_set_twice_names_both_files(self, tmp_path: Path) -> None:
        root = tmp_path / "profiles"
        write(root / "a.yaml", "server: {max_sidecars: 1}\n")
        write(root / "b.yaml", "server: {max_sidecars: 2}\n")
        assert "a.yaml:1" in find(issues(root), "also set in").message

    def test_errors_in_several_files_all_reported(self, tmp_path: Path) -> None:
        root = tmp_path / "profiles"
        write(root / "a.yaml", "models:\n  a: {path: a.gguf, args: [--bogus]}\n")
        write(root / "b.yaml", "models:\n  b: {pathh: b.gguf}\n")
        found = issues(root)
        assert {Path(i.file).name for i in found} == {"a.yaml", "b.yaml"}

    def test_command_program_resolves_like_binary(self, tmp_path: Path) -> None:
        (tmp_path / "p.yaml").write_text(
            "models:\n"
            "  a: {command: [./bin/whisper-server, --port, '${PORT}']}\n"
            "  b: {command: [whisper-server, --port, '${PORT}']}\n"
        )
        profiles = load_profiles(tmp_path, {})
        assert profiles.models["a"].command == (
            str(tmp_path.resolve() / "bin" / "whisper-server"),
            "--port",
            "${PORT}",
        )
        assert profiles.models["b"].command == ("whisper-server", "--port", "${PORT}")

    def test_empty_file_is_an_error(self, tmp_path: Path) -> None:
        """An empty file is refused: a reload that reads a file mid-write must not adopt an
        empty set (which would stop every sidecar)."""
        (tmp_path / "a.yaml").write_text("models:\n  m: {path: /m.gguf}\n")
        (tmp_path / "b.yaml").write_text("\ufeff\n  \n")
        assert find(issues(tmp_path), "the file is empty").file.endswith("b.yaml")

    def test_empty_directory_is_an_error(self, tmp_path: Path) -> None:
        (tmp_path / "empty").mkdir()
        assert "no *.yaml" in find(issues(tmp_path / "empty"), "no *.yaml").message

    def test_revision_changes_with_content(self, tmp_path: Path) -> None:
        path = write(tmp_path / "p.yaml", MINIMAL)
        first = load(path).revision
        assert load(path).revision == first
        write(path, MINIMAL + "  # comment\n")
        assert load(path).revision != first


def test_missing_path_is_reported(tmp_path: Path) -> None:
    assert "no such file" in find(issues(tmp_path / "nope.yaml"), "no such file").message


def test_load_profiles_reads_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMASUP_TEST_DIR", str(tmp_path))
    path = write(tmp_path / "p.yaml", "models:\n  m:\n    path: ${env.LLAMASUP_TEST_DIR}/m.gguf\n")
    assert load_profiles(path).models["m"].path == tmp_path / "m.gguf"


def test_pinned_models_that_cannot_all_run_are_warned_about(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        "server: {max_sidecars: 1, memory_budget: 10GiB}\n"
        "models:\n"
        "  b: {path: b.gguf, pinned: true, memory: 4GiB}\n"
        "  a: {path: a.gguf, pinned: true, memory: 4GiB}\n",
    )
    warned = [w for w in load(path).warnings if w.path.endswith(".pinned")]
    assert [w.path for w in warned] == ["models.b.pinned"]  # id order: a runs, b is refused
    assert "'b' will be refused: max_sidecars is 1" in warned[0].message
    budget = write(
        tmp_path / "q.yaml",
        "server: {memory_budget: 6GiB}\n"
        "models:\n"
        "  a: {path: a.gguf, pinned: true, memory: 4GiB}\n"
        "  b: {path: b.gguf, pinned: true, memory: 4GiB}\n",
    )
    [over] = [w for w in load(budget).warnings if w.path.endswith(".pinned")]
    assert over.path == "models.b.pinned" and "over memory_budget 6.0 GiB" in over.message
    # what the planner does: a refused one does not count, so a later small one still fits
    mixed = write(
        tmp_path / "m.yaml",
        "server: {memory_budget: 10GiB}\n"
        "models:\n"
        "  a: {path: a.gguf, pinned: true, memory: 4GiB}\n"
        "  b: {path: b.gguf, pinned: true, memory: 8GiB}\n"
        "  c: {path: c.gguf, pinned: true, memory: 2GiB}\n",
    )
    assert [w.path for w in load(mixed).warnings if w.path.endswith(".pinned")] == [
        "models.b.pinned"
    ]
