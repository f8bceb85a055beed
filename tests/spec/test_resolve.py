"""resolve(): from (model, agent) to a SidecarSpec, its identity key and request defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from profile_helpers import load, write

from llamasup.errors import ResolveError, UnknownAgentError, UnknownModelError
from llamasup.flags.flagset import parse_header
from llamasup.profiles.types import Profiles
from llamasup.spec.resolve import Resolver, SidecarSpec, resolve, split_target

PROFILE = """
server:
  base_args: [-ngl, 999, -c, 32768, --flash-attn, "on", --no-mmap]
  env: {GGML_SHARED: "1"}
models:
  coder:
    path: /models/coder.gguf
    args: [--jinja, --ctx-size, 65536, --temp, 0.7]
    aliases: [coder-default]
    env: {CUDA_VISIBLE_DEVICES: "0"}
    pinned: true
    group: gpu
  whisper:
    command: [whisper-server, --port, "${PORT}", -m, /models/ggml-base.bin]
    health: /ready
    upstream_model: whisper-1
agents:
  fast: {model: coder, flags: --temp 0.2 --top-k 20}
  careful: {flags: [--temp, 0.9, --top-k, 40, --seed, 7]}
  bigctx: {flags: --ctx-size 131072}
  q8: {flags: --cache-type-k q8_0}
  q8-fast: {flags: --cache-type-k q8_0 --temp 0.1}
"""


@pytest.fixture
def profiles(tmp_path: Path) -> Profiles:
    return load(write(tmp_path / "p.yaml", PROFILE))


def test_plain_model_spec(profiles: Profiles) -> None:
    spec = resolve(profiles, "coder").spec
    assert spec.kind == "llama-server"
    assert spec.args == (
        "--model", "/models/coder.gguf",
        "--jinja",
        "--ctx-size", "65536",
        "--flash-attn", "on",
        "--load-mode", "none",
        "--n-gpu-layers", "999",
        "--temp", "0.7",
        "--alias", "coder",
    )  # fmt: skip
    assert "--host" not in spec.args and "--port" not in spec.args
    assert spec.env == (("CUDA_VISIBLE_DEVICES", "0"), ("GGML_SHARED", "1"))
    assert spec.pinned and spec.group == "gpu" and spec.served_name == "coder"
    assert spec.model_path == "/models/coder.gguf"


def test_command_line_adds_llamasups_host_and_port(profiles: Profiles) -> None:
    spec = resolve(profiles, "coder").spec
    line = spec.command_line("/opt/llama-server", "127.0.0.1", 8512)
    assert line[0] == "/opt/llama-server"
    assert line[-4:] == ["--host", "127.0.0.1", "--port", "8512"]


def test_alias_and_agent_default_model(profiles: Profiles) -> None:
    assert resolve(profiles, "coder-default").spec == resolve(profiles, "coder").spec
    by_agent = resolve(profiles, None, "fast")
    assert by_agent.model.id == "coder"
    assert by_agent.agent is not None and by_agent.agent.name == "fast"

    # a bare agent name as the model: the agent on its own model (llama-swap's variant ids)
    bare = resolve(profiles, "fast")
    assert (bare.spec, bare.request_defaults) == (by_agent.spec, by_agent.request_defaults)
    assert bare.agent is not None and bare.agent.name == "fast"
    with pytest.raises(UnknownModelError):
        resolve(profiles, "careful")  # an agent without a model is not a model
    with pytest.raises(UnknownModelError):
        resolve(profiles, "fast", "careful")  # with an explicit agent, a name is a model only


def test_agents_differing_only_in_sampling_share_a_sidecar(profiles: Profiles) -> None:
    plain = resolve(profiles, "coder")
    fast = resolve(profiles, "coder", "fast")
    careful = resolve(profiles, "coder", "careful")
    assert plain.spec.key == fast.spec.key == careful.spec.key
    assert dict(fast.request_defaults) == {"temperature": 0.2, "top_k": 20}
    assert dict(careful.request_defaults) == {"temperature": 0.9, "top_k": 40, "seed": 7}
    assert dict(plain.request_defaults) == {}


def test_load_time_differences_get_their_own_sidecar(profiles: Profiles) -> None:
    keys = {resolve(profiles, "coder", agent).spec.key for agent in (None, "bigctx", "q8")}
    assert len(keys) == 3
    q8, q8_fast = resolve(profiles, "coder", "q8"), resolve(profiles, "coder", "q8-fast")
    assert q8.spec.key == q8_fast.spec.key
    assert "--cache-type-k" in q8.spec.args
    assert resolve(profiles, "coder", "bigctx").spec.load_flags.value("--ctx-size") == "131072"


def test_key_is_stable_across_runs_and_machines() -> None:
    """Pinned value: a change here means every running sidecar restarts after an upgrade."""
    spec = SidecarSpec(
        model="m", kind="llama-server", binary="", args=("--model", "/m.gguf", "--alias", "m")
    )
    assert spec.key == "f5c5ce3ec30b2b15"
    assert spec.key == SidecarSpec(**{**spec.__dict__, "key": ""}).key


def test_key_ignores_what_does_not_change_the_process() -> None:
    base = SidecarSpec(model="m", kind="llama-server", binary="", args=("--model", "/m.gguf"))
    same = SidecarSpec(
        model="m", kind="llama-server", binary="", args=("--model", "/m.gguf"),
        pinned=True, ttl=30.0, memory=10, group="g", concurrency=2, served_name="x",
    )  # fmt: skip
    assert base.key == same.key


@pytest.mark.parametrize(
    "change",
    [
        {"args": ("--model", "/other.gguf")},
        {"args": ("--model", "/m.gguf", "--ctx-size", "8")},
        {"binary": "/opt/llama-server"},
        {"env": (("CUDA_VISIBLE_DEVICES", "1"),)},
        {"kind": "command"},
    ],
)
def test_key_changes_with_anything_load_time(change: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "model": "m", "kind": "llama-server", "binary": "", "args": ("--model", "/m.gguf"),
    }  # fmt: skip
    before = SidecarSpec(**fields)  # type: ignore[arg-type]
    after = SidecarSpec(**{**fields, **change})  # type: ignore[arg-type]
    assert before.key != after.key


def test_profile_edits_that_keep_the_process_keep_the_key(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", PROFILE)
    before = resolve(load(path), "coder").spec.key
    edited = PROFILE.replace("pinned: true", "pinned: false\n    description: edited") + (
        "  new-agent: {flags: --temp 0.3}\n"
    )
    write(path, edited)
    assert resolve(load(path), "coder").spec.key == before
    write(path, PROFILE.replace("65536", "32768"))
    assert resolve(load(path), "coder").spec.key != before


def test_x_agent_flags_overlay_after_the_agent(profiles: Profiles) -> None:
    extra = parse_header("--temp 0.05 --ctx-size 4096", allow_load=frozenset({"--ctx-size"}))
    resolved = resolve(profiles, "coder", "fast", extra=extra)
    assert resolved.request_defaults == {"temperature": 0.05, "top_k": 20}
    assert resolved.spec.load_flags.value("--ctx-size") == "4096"
    assert resolved.spec.key != resolve(profiles, "coder", "fast").spec.key


def test_command_model(profiles: Profiles) -> None:
    resolved = resolve(profiles, "whisper", "careful")
    spec = resolved.spec
    assert spec.kind == "command"
    assert (spec.binary, spec.health_path, spec.served_name) == (
        "whisper-server",
        "/ready",
        "whisper-1",
    )
    assert spec.command_line("whisper-server", "127.0.0.1", 8600) == [
        "whisper-server", "--port", "8600", "-m", "/models/ggml-base.bin",
    ]  # fmt: skip
    assert resolved.request_defaults["temperature"] == 0.9  # request-time defaults still apply


def test_load_time_overlay_on_a_command_model_is_refused(profiles: Profiles) -> None:
    with pytest.raises(ResolveError, match="command model"):
        resolve(profiles, "whisper", "bigctx")


def test_unknown_model_lists_valid_ones(profiles: Profiles) -> None:
    with pytest.raises(UnknownModelError) as info:
        resolve(profiles, "gpt-4")
    assert "coder" in str(info.value) and "whisper" in str(info.value)
    with pytest.raises(UnknownModelError):
        resolve(profiles, None, "careful")  # agent without a default model, and no model


def test_unknown_agent_lists_valid_ones(profiles: Profiles) -> None:
    with pytest.raises(UnknownAgentError, match="fast"):
        resolve(profiles, "coder", "nobody")


def test_split_target() -> None:
    assert split_target("coder@fast") == ("coder", "fast")
    assert split_target("coder") == ("coder", None)
    assert split_target("@fast") == ("", "fast")


def test_resolver_memoises_per_profile_set(profiles: Profiles) -> None:
    resolver = Resolver(profiles)
    first = resolver.resolve("coder", "fast")
    assert resolver.resolve("coder", "fast") is first
    extra = parse_header("--temp 0.3")
    assert resolver.resolve("coder", "fast", extra=extra).request_defaults["temperature"] == 0.3
