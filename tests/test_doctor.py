"""``llamasup doctor``: each host check on real files, sockets and binaries, and the command."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from profile_helpers import load, write

from llamasup import doctor
from llamasup.cli.main import main
from llamasup.doctor import (
    check_binary,
    check_command,
    check_flag_table,
    check_listen,
    check_model,
    check_ports,
    check_state_dir,
    check_system_config,
    run_checks,
)
from llamasup.flags.helptext import table_drift
from llamasup.flags.table import TABLE
from llamasup.flags.vocabulary import Kind
from llamasup.profiles.types import ModelConfig, ServerConfig, Source
from llamasup.testing.process import free_port

SOURCE = Source("profiles.yaml", 3)


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def _gguf(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    return path


@contextmanager
def _listening(host: str = "127.0.0.1") -> Iterator[int]:
    with socket.socket() as held:
        held.bind((host, 0))
        held.listen()
        yield int(held.getsockname()[1])


# -- model files ---------------------------------------------------------------------------------


def test_a_gguf_model_file_is_ok(tmp_path: Path) -> None:
    result = check_model(ModelConfig("m", SOURCE, path=_gguf(tmp_path / "m.gguf")))
    assert (result.check, result.status) == ("model m", "ok")
    assert "GGUF" in result.detail


def test_a_file_that_is_not_gguf_fails_with_what_it_starts_with(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00{}")
    result = check_model(ModelConfig("m", SOURCE, path=path))
    assert result.status == "FAIL"
    assert "not a GGUF file" in result.detail and "b'\\x08\\x00\\x00\\x00'" in result.detail
    assert "models.m.path (profiles.yaml:3)" in result.fix


def test_an_empty_file_is_not_gguf(tmp_path: Path) -> None:
    (tmp_path / "empty.gguf").write_bytes(b"")
    assert check_model(ModelConfig("m", SOURCE, path=tmp_path / "empty.gguf")).status == "FAIL"


def test_a_missing_model_file_or_a_directory_fails(tmp_path: Path) -> None:
    missing = check_model(ModelConfig("m", SOURCE, path=tmp_path / "nope.gguf"))
    assert missing.status == "FAIL" and "does not exist" in missing.detail
    directory = check_model(ModelConfig("m", SOURCE, path=tmp_path))
    assert directory.status == "FAIL" and "is a directory" in directory.detail


def test_a_model_without_a_local_file_is_not_checked() -> None:
    assert check_model(ModelConfig("m", SOURCE)).status == "ok"


# -- command models ------------------------------------------------------------------------------


def test_a_command_is_looked_up_on_the_path_the_child_gets(tmp_path: Path) -> None:
    _script(tmp_path / "bin" / "whisper-server", "exit 0")
    model = ModelConfig("w", SOURCE, command=("whisper-server", "--port", "${PORT}"))
    missing = check_command(model, ServerConfig(), {"PATH": str(tmp_path / "empty")})
    assert missing.status == "FAIL" and "'whisper-server' is not on PATH" in missing.detail
    assert "install whisper-server" in missing.fix
    on_profile_path = ModelConfig(
        "w", SOURCE, command=model.command, env=(("PATH", str(tmp_path / "bin")),)
    )
    found = check_command(on_profile_path, ServerConfig(), {"PATH": str(tmp_path / "empty")})
    assert (found.status, found.detail) == ("ok", str(tmp_path / "bin" / "whisper-server"))


def test_a_command_path_must_be_an_executable_file(tmp_path: Path) -> None:
    plain = tmp_path / "server.py"
    plain.write_text("")
    model = ModelConfig("w", SOURCE, command=(str(plain), "${PORT}"))
    assert check_command(model, ServerConfig(), {}).status == "FAIL"
    plain.chmod(0o755)
    assert check_command(model, ServerConfig(), {}).status == "ok"


# -- binary, version, flag table -----------------------------------------------------------------


def test_the_fake_server_binary_resolves_with_the_tested_build(fake_server_bin: Path) -> None:
    found, results = check_binary(str(fake_server_bin), {})
    assert found == fake_server_bin
    assert [(r.check, r.status) for r in results] == [("binary", "ok"), ("binary version", "ok")]
    assert results[1].detail == "b11434-fake"


def test_another_llama_cpp_build_is_a_warning(tmp_path: Path) -> None:
    other = _script(
        tmp_path / "llama-server",
        "echo 'version: 9.9.9 (build 12000, commit abc)' >&2",
    )
    found, results = check_binary(str(other), {})
    assert found == other
    assert results[1].status == "warn"
    assert results[1].detail.startswith("b12000-abc; llamasup's flag table describes b11434")


def test_a_binary_that_cannot_run_fails(tmp_path: Path) -> None:
    broken = _script(tmp_path / "llama-server", "exit 1")
    found, results = check_binary(str(broken), {})
    assert found is None
    assert results[-1].status == "FAIL" and "--version" in results[-1].fix


def test_an_unresolvable_binary_fails_with_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found, results = check_binary(str(tmp_path / "missing"), {})
    assert found is None
    assert [r.status for r in results] == ["FAIL"]
    assert "does not exist" in results[0].detail
    assert f"binary: {tmp_path / 'missing'}" in results[0].fix
    monkeypatch.setenv("LLAMASUP_CACHE_DIR", str(tmp_path / "empty-cache"))
    _, default = check_binary(None, {"PATH": str(tmp_path)})
    assert [r.status for r in default] == ["FAIL"]
    assert "llamasup runtime install" in default[0].fix


@pytest.mark.e2e
def test_the_real_binary_matches_the_flag_table(llama_server_bin: Path) -> None:
    result = check_flag_table(llama_server_bin)
    assert result.status == "ok", result.detail


def test_flag_table_drift_is_listed_both_ways(tmp_path: Path) -> None:
    help_text = (
        "----- common params -----\n\n"
        "--frobnicate N                          a flag from the future\n"
        "--jinja N                               now takes a value\n"
        "-c,    --ctx-size N                     size of the prompt context\n"
    )
    binary = _script(tmp_path / "llama-server", f"cat <<'EOF'\n{help_text}EOF")
    result = check_flag_table(binary)
    assert result.status == "warn"
    assert "the binary has flags the table does not model: --frobnicate" in result.detail
    assert "the table has flags the binary lacks: " in result.detail
    assert "value vs switch disagrees for: --jinja" in result.detail


def test_flags_a_model_uses_that_an_older_build_lacks_fail(tmp_path: Path) -> None:
    help_text = (
        "----- common params -----\n\n"
        "-m,    --model FNAME                    model path\n"
        "-c,    --ctx-size N                     size of the prompt context\n"
        "--alias STRING                          model name\n"
    )
    old = _script(
        tmp_path / "bin" / "llama-server-b5000",
        'if [ "$1" = --version ]; then echo "version: 5000 (abc)" >&2; exit 0; fi\n'
        f"cat <<'EOF'\n{help_text}EOF",
    )
    profile = write(
        tmp_path / "p.yaml",
        f"server: {{binary: {old}}}\n"
        "models:\n"
        "  plain: {path: /m/a.gguf, args: [-c, 1024]}\n"
        "  lean: {path: /m/b.gguf, args: [--no-mmap]}\n"
        "agents:\n"
        "  q8: {flags: --cache-type-k q8_0}\n"
        "  cool: {flags: --temp 0.2}\n",
    )
    results = {r.check: r for r in doctor.check_binaries(load(profile), {})}
    in_use = results["flags in use"]
    assert in_use.status == "FAIL", in_use.detail
    assert "lean: --load-mode" in in_use.detail  # --no-mmap, as b11434 spells it
    assert "lean@q8: --cache-type-k;" in in_use.detail  # what the agent adds
    assert "plain@q8: --cache-type-k" in in_use.detail
    assert "plain:" not in in_use.detail
    assert "@cool" not in in_use.detail  # sampling flags go with each request, not to argv


def test_a_binary_whose_help_lists_no_flags_is_not_compared(fake_server_bin: Path) -> None:
    result = check_flag_table(fake_server_bin)
    assert result.status == "warn" and "lists no flags" in result.detail


def test_table_drift_does_not_expect_removed_flags_in_the_help() -> None:
    drift = table_drift([], TABLE)
    live = {s for flag in TABLE if flag.kind is not Kind.REMOVED for s in flag.spellings}
    assert set(drift.missing) == live
    assert "--draft-max" not in drift.missing  # refused with a hint, listed or not
    assert not drift.unmodelled and not drift.arity


# -- network ----------------------------------------------------------------------------------


def test_a_sidecar_range_with_every_port_taken_fails() -> None:
    with _listening() as port:
        result = check_ports(port, port)
    assert result.status == "FAIL"
    assert f"{port}-{port}: 0 of 1 probed port(s) free" in result.detail


def test_sidecar_ports_probe_until_enough_are_free(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = {9000, 9001}
    probed: list[int] = []

    def fake_probe(host: str, port: int) -> bool:
        assert host == "127.0.0.1"
        probed.append(port)
        return port not in taken

    monkeypatch.setattr(doctor, "port_is_free", fake_probe)
    ok = check_ports(9000, 9099, needed=2)
    assert (ok.status, probed) == ("ok", [9000, 9001, 9002, 9003])
    probed.clear()
    few = check_ports(9000, 9002, needed=2)
    assert few.status == "warn" and "2 sidecar(s) may run at once" in few.detail
    assert probed == [9000, 9001, 9002]


def test_listen_in_use_asks_whether_llamasup_already_runs() -> None:
    with _listening() as port:
        result = check_listen("127.0.0.1", port)
    assert result.status == "warn"
    assert "is llamasup already running?" in result.detail


def test_listen_free_and_foreign_addresses() -> None:
    assert check_listen("127.0.0.1", free_port()).status == "ok"
    foreign = check_listen("192.0.2.1", free_port())  # TEST-NET-1: never this host's address
    assert foreign.status == "FAIL" and "cannot bind" in foreign.detail


# -- files -------------------------------------------------------------------------------------


def test_a_missing_state_dir_is_created(tmp_path: Path) -> None:
    state = tmp_path / "state" / "llamasup"
    result = check_state_dir(state)
    assert (result.status, result.detail) == ("ok", f"{state} is writable (created)")
    assert state.is_dir() and list(state.iterdir()) == []


def test_an_unwritable_state_dir_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a directory cannot be made below a file, not even by root
    result = check_state_dir(blocker / "state")
    assert result.status == "FAIL" and "not writable" in result.detail
    assert "server.state_dir" in result.fix


def test_the_system_wide_llama_cpp_config_is_a_warning(tmp_path: Path) -> None:
    config = tmp_path / "config.ini"
    assert check_system_config(config).status == "ok"
    config.write_text("[*]\nctx-size = 128\n")
    result = check_system_config(config)
    assert result.status == "warn" and "cannot hide this one" in result.detail


# -- the whole run and the command ---------------------------------------------------------------


def _profile(tmp_path: Path, binary: Path, model: Path) -> Path:
    port = free_port()
    return write(
        tmp_path / "profiles" / "host.yaml",
        f"""
        server:
          listen: 127.0.0.1:{free_port()}
          binary: {binary}
          ports: {port}-{port}
          state_dir: {tmp_path / "state"}
        models:
          tiny: {{path: {model}}}
        """,
    )


def test_a_healthy_host_exits_0_with_json_for_scripts(
    tmp_path: Path, fake_server_bin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _profile(tmp_path, fake_server_bin, _gguf(tmp_path / "tiny.gguf"))
    assert main(["doctor", str(path.parent), "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert all(set(item) == {"check", "status", "detail", "fix"} for item in report)
    statuses = {item["check"]: item["status"] for item in report}
    assert statuses["profiles"] == statuses["model tiny"] == statuses["state dir"] == "ok"
    assert statuses["binary"] == statuses["binary version"] == "ok"
    assert statuses["flag table"] == "warn"  # the fake has no --help
    assert {"sidecar ports", "listen", "llama.cpp config.ini"} <= set(statuses)


def test_a_bad_model_file_exits_1_and_says_how_to_fix(
    tmp_path: Path, fake_server_bin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_gguf = tmp_path / "tiny.gguf"
    not_gguf.write_text("<html>404</html>")
    path = _profile(tmp_path, fake_server_bin, not_gguf)
    assert main(["doctor", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  model tiny: {not_gguf} is not a GGUF file" in out
    assert "      fix: convert it to GGUF" in out
    assert out.splitlines()[-1].endswith("1 failure(s)")


def test_invalid_profiles_fail_and_the_host_checks_still_run(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", "models: {a: {pathh: a.gguf}}\n")
    results = run_checks(path, {"PATH": str(tmp_path)}, system_config=tmp_path / "absent.ini")
    assert results[0].check == "profiles" and results[0].status == "FAIL"
    assert "llamasup validate" in results[0].fix
    checks = [r.check for r in results]
    assert "binary" in checks and checks[-1] == "llama.cpp config.ini"
    assert not any(c.startswith(("model ", "state dir", "listen")) for c in checks)


def test_a_model_with_its_own_binary_gets_its_own_checks(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    model = _gguf(tmp_path / "m.gguf")
    path = write(
        tmp_path / "p.yaml",
        f"""
        server: {{binary: {fake_server_bin}, state_dir: {tmp_path / "state"}}}
        models:
          a: {{path: {model}}}
          b: {{path: {model}, binary: {tmp_path / "other-server"}}}
        """,
    )
    results = {r.check: r for r in run_checks(path, {}, system_config=tmp_path / "x.ini")}
    assert results["binary"].status == "ok"
    assert results["binary for b"].status == "FAIL"
    assert "other-server" in results["binary for b"].detail
