"""The flag model: kinds refused per layer, normalisation, legacy spellings, merge rules."""

from __future__ import annotations

import pytest

from llamasup.errors import FlagError
from llamasup.flags.flagset import (
    FlagSet,
    lookup,
    merge,
    parse,
    parse_header,
    tokenize,
)
from llamasup.flags.vocabulary import Kind, Layer


def flags(text: str, layer: Layer = Layer.MODEL) -> FlagSet:
    return parse(tokenize(text), layer).raise_first()


def error_of(text: str, layer: Layer = Layer.MODEL) -> FlagError:
    result = parse(tokenize(text), layer)
    assert result.errors, f"{text!r} parsed without error in {layer}"
    return result.errors[0]


@pytest.mark.parametrize("text", ["--host 0.0.0.0", "--port 9000", "-m x.gguf", "--model x"])
@pytest.mark.parametrize("layer", list(Layer))
def test_owned_flags_are_refused_in_every_layer(text: str, layer: Layer) -> None:
    err = error_of(text, layer)
    assert "llamasup sets this flag itself" in err.reason


def test_owned_flag_message_says_what_to_do_instead() -> None:
    assert "server.ports" in error_of("--port 1").reason
    assert "models.<id>.path" in error_of("-m a.gguf").reason
    assert "server.api_keys" in error_of("--api-key secret").reason
    assert "exit" in error_of("--version").reason


@pytest.mark.parametrize(
    "text",
    [
        "--api-key-file keys.txt",
        "--log-file /tmp/x.log",
        "--ssl-key-file k.pem",
        "--models-dir /models",
        "--alias other",
        "--api-prefix /v2",
    ],
)
def test_flags_llamasup_controls_are_refused_even_in_trusted_layers(text: str) -> None:
    layer = Layer.MODEL if "log-file" not in text else Layer.AGENT
    assert error_of(text, layer)


@pytest.mark.parametrize(
    "text",
    [
        "--log-file /tmp/x.log",
        "--lora adapter.gguf",
        "--chat-template-file t.jinja",
        "--grammar-file g.gbnf",
        "-md draft.gguf",
        "--model-draft draft.gguf",
        "-hf user/model",
        "--hf-token abc",
        "--slot-save-path /tmp",
        "--path /srv",
        "--rpc 10.0.0.1:50052",
        "--media-path /data",
        "--mcp-servers-config x.json",
    ],
)
def test_file_and_network_flags_are_trusted_only(text: str) -> None:
    assert flags(text, Layer.MODEL)  # allowed where the profile author is trusted
    for layer in (Layer.AGENT, Layer.HEADER):
        err = error_of(text, layer)
        assert "files, the network or downloads" in err.reason
        assert layer.value in err.reason


def test_removed_flag_names_the_replacement() -> None:
    err = error_of("--draft-max 16")
    assert "--spec-draft-n-max" in err.reason


def test_unknown_flag_suggests_the_closest() -> None:
    err = error_of("--ctx-sise 4096")
    assert err.flag == "--ctx-sise"
    assert "did you mean --ctx-size" in err.reason


def test_one_error_per_bad_flag_not_per_value() -> None:
    result = parse(tokenize("--host 0.0.0.0 --bogus 3 --lora x.gguf -c 8"), Layer.AGENT)
    assert [e.flag for e in result.errors] == ["--host", "--bogus", "--lora"]
    assert result.flags.value("--ctx-size") == "8"


def test_aliases_normalise_to_the_canonical_long_name() -> None:
    parsed = flags("-c 4096 -ngl 99 -np 2 -fa 1 -ctk Q8_0 -t 4 --temperature 0.5")
    assert parsed.argv() == (
        "--cache-type-k", "q8_0",
        "--ctx-size", "4096",
        "--flash-attn", "on",
        "--n-gpu-layers", "99",
        "--parallel", "2",
        "--temp", "0.5",
        "--threads", "4",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("given", "expected"),
    [("1", "on"), ("true", "on"), ("enabled", "on"), ("0", "off"), ("disabled", "off"),
     ("-1", "auto"), ("auto", "auto"), ("ON", "on")],
)  # fmt: skip
def test_flash_attn_values_take_one_spelling(given: str, expected: str) -> None:
    assert flags(f"--flash-attn {given}").value("--flash-attn") == expected


def test_bare_fa_becomes_flash_attn_on_like_llama_sidecar_did() -> None:
    assert flags("-fa --top-k 3").argv() == ("--flash-attn", "on", "--top-k", "3")
    assert flags("-c 8 -fa").value("--flash-attn") == "on"


def test_numbers_normalise_so_equal_configs_compare_equal() -> None:
    assert flags("--temp 1").value("--temp") == flags("--temp 1.00").value("--temp") == "1.0"
    assert flags("-c +4096").value("--ctx-size") == "4096"
    assert flags("-s -1").value("--seed") == "-1"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("-c lots", "expects an integer"),
        ("--temp hot", "expects a number"),
        ("--temp nan", "finite"),
        ("-ctk q3", "expects one of f32, f16"),
        ("--flash-attn maybe", "expects one of on, off, auto"),
        ("-ngl many", "layer count"),
        ("--json-schema {oops", "expects JSON"),
        ("-c", "expects 1 value"),
        ("--jinja=1", "takes no value"),
        ("stray", "values must follow"),
    ],
)
def test_bad_values_are_rejected_with_the_reason(text: str, needle: str) -> None:
    assert needle in error_of(text).reason


def test_conflicting_duplicates_in_one_layer_are_an_error() -> None:
    err = error_of("-c 4096 --ctx-size 8192")
    assert "conflicts with -c" in err.reason
    assert "4096 vs 8192" in err.reason
    assert "conflicts" in error_of("--jinja --no-jinja").reason
    assert flags("-c 4096 --ctx-size 4096").value("--ctx-size") == "4096"


def test_negations_share_the_canonical_flag() -> None:
    assert flags("--no-jinja").argv() == ("--no-jinja",)
    assert flags("-nkvo").value("--kv-offload") is False
    assert flags("--kv-offload").value("--kv-offload") is True
    merged = merge(flags("--no-webui", Layer.BASE), flags("--webui"))
    assert merged.argv() == ("--webui",)


def test_legacy_mmap_spellings_become_load_mode() -> None:
    assert flags("--no-mmap").argv() == ("--load-mode", "none")
    assert flags("--mlock").argv() == ("--load-mode", "mlock")
    assert flags("--mlock --no-mmap").value("--load-mode") == "mlock"
    assert flags("--mmap --mlock").value("--load-mode") == "mmap+mlock"


def test_underscore_and_equals_spellings() -> None:
    assert flags("--ctx_size 512 --top-k=7").argv() == ("--ctx-size", "512", "--top-k", "7")


def test_repeatable_flags_accumulate_within_a_layer() -> None:
    parsed = flags("-r STOP -r END --dry-sequence-breaker a")
    assert parsed.value("--reverse-prompt") == ("STOP", "END")
    assert parsed.argv() == (
        "--dry-sequence-breaker", "a", "--reverse-prompt", "STOP", "--reverse-prompt", "END",
    )  # fmt: skip


def test_later_layer_replaces_the_same_flag_and_drops_nothing_else() -> None:
    base = flags("-ngl 999 -c 32768 --flash-attn on --no-mmap", Layer.BASE)
    model = flags("--ctx-size 65536 --jinja")
    agent = flags("--cache-type-k q8_0 -c 8192", Layer.AGENT)
    merged = merge(base, model, agent)
    assert merged.value("--ctx-size") == "8192"
    assert merged.value("--n-gpu-layers") == "999"
    assert merged.value("--flash-attn") == "on"
    assert merged.value("--load-mode") == "none"
    assert merged.value("--jinja") is True
    assert merged.value("--cache-type-k") == "q8_0"
    assert merge(base, model).value("--ctx-size") == "65536"


def test_shadowing_by_alias_keeps_the_context_size() -> None:
    """llama-sidecar once lost -c when a model overrode it by another spelling."""
    merged = merge(flags("-c 32768 -ngl 999", Layer.BASE), flags("--ctx-size 4096"))
    assert merged.argv() == ("--ctx-size", "4096", "--n-gpu-layers", "999")


def test_argv_order_is_canonical_whatever_the_input_order() -> None:
    one = flags("--top-k 20 --ctx-size 8 --cache-type-k q8_0")
    two = flags("--cache-type-k q8_0 --top-k 20 -c 8")
    assert one.argv() == two.argv()
    assert flags("--chat-template chatml --jinja").argv()[0] == "--jinja"


def test_request_defaults_use_llama_server_json_fields() -> None:
    parsed = flags(
        "--temp 0.2 --top-k 20 --top-p 0.9 --min-p 0.05 -n 128 --seed 7 --repeat-penalty 1.1 "
        "--mirostat-lr 0.2 --samplers top_k;temperature -l 15043+1 -l 2-inf "
        '--dry-sequence-breaker none --ignore-eos -r END -j \'{"type":"object"}\'',
        Layer.AGENT,
    )
    assert parsed.request_defaults() == {
        "temperature": 0.2,
        "top_k": 20,
        "top_p": 0.9,
        "min_p": 0.05,
        "n_predict": 128,
        "seed": 7,
        "repeat_penalty": 1.1,
        "mirostat_eta": 0.2,
        "samplers": ["top_k", "temperature"],
        "logit_bias": [[15043, 1.0], [2, False]],
        "dry_sequence_breakers": [],
        "ignore_eos": True,
        "stop": ["END"],
        "json_schema": {"type": "object"},
    }


def test_kinds_of_well_known_flags() -> None:
    assert lookup("--temp").kind is Kind.REQUEST  # type: ignore[union-attr]
    assert lookup("-c").kind is Kind.LOAD  # type: ignore[union-attr]
    assert lookup("--host").kind is Kind.OWNED  # type: ignore[union-attr]
    assert lookup("--lora").kind is Kind.TRUSTED  # type: ignore[union-attr]
    assert lookup("--nonexistent") is None


def test_yaml_scalars_become_tokens() -> None:
    assert tokenize(["--flash-attn", True, "-c", 4096, "--temp", 0.5]) == [
        "--flash-attn", "on", "-c", "4096", "--temp", "0.5",
    ]  # fmt: skip
    assert tokenize("--chat-template 'a b' -c 8") == ["--chat-template", "a b", "-c", "8"]
    with pytest.raises(FlagError, match="cannot split"):
        tokenize("--chat-template 'unterminated")


class TestHeader:
    def test_request_time_flags_are_allowed(self) -> None:
        assert parse_header("--temp 0.1 --top-k 5").request_defaults() == {
            "temperature": 0.1,
            "top_k": 5,
        }

    def test_load_time_flags_need_the_allowlist(self) -> None:
        with pytest.raises(FlagError, match="load-time flag not allowed"):
            parse_header("--ctx-size 8192")
        allowed = parse_header("--ctx-size 8192", allow_load=frozenset({"--ctx-size"}))
        assert allowed.value("--ctx-size") == "8192"
        with pytest.raises(FlagError, match=r"allowed: .*--ctx-size"):
            parse_header("-ngl 5", allow_load=frozenset({"--ctx-size"}))

    @pytest.mark.parametrize(
        "header",
        [
            "--host 0.0.0.0",
            "--port 1",
            "-m /etc/passwd",
            "--model x",
            "--api-key-file /etc/shadow",
            "--log-file /tmp/x",
            "--bogus 1",
        ],
    )
    def test_dangerous_or_unknown_flags_are_refused(self, header: str) -> None:
        with pytest.raises(FlagError):
            parse_header(header, allow_load=frozenset({"--ctx-size"}))

    @pytest.mark.parametrize(
        "header",
        ["--temp 0.1; rm -rf /", "--temp $(id)", "--temp `id`", "--temp 1 | nc", "--temp 1\n-c 2",
         "--temp 1 && x", "--temp 1 > /tmp/x", "--temp \\x"],
    )  # fmt: skip
    def test_shell_metacharacters_are_refused(self, header: str) -> None:
        with pytest.raises(FlagError, match="not allowed in request flags"):
            parse_header(header)

    def test_overlong_header_is_refused(self) -> None:
        with pytest.raises(FlagError, match="longer than"):
            parse_header("--temp 0.1 " * 200)


@pytest.mark.parametrize(
    ("text", "accepts"),
    [
        ("--ctx-size -5", "from 2 to 2147483647 (or 0)"),
        ("-c 1", "from 2 to 2147483647 (or 0)"),
        ("-c 99999999999999999999", "from 2 to 2147483647 (or 0)"),
        ("--parallel 0", "from 1 to 2147483647 (or -1)"),
        ("-b 2", "from 4 to 2147483647"),
        ("--threads 3000000000", "from -2147483648 to 2147483647"),
        ("-ngl 4294967296", "from -2147483648 to 2147483647"),
    ],
)
@pytest.mark.parametrize("layer", list(Layer))
def test_integer_values_llama_server_would_crash_on_are_refused_in_every_layer(
    text: str, accepts: str, layer: Layer
) -> None:
    err = error_of(text, layer) if layer is not Layer.HEADER else _header_error(text)
    assert f"expects an integer {accepts}" in err.reason


def _header_error(text: str) -> FlagError:
    with pytest.raises(FlagError) as caught:
        parse_header(
            text,
            allow_load=frozenset(
                {"--ctx-size", "--parallel", "--batch-size", "--threads", "--n-gpu-layers"}
            ),
        )
    return caught.value


@pytest.mark.parametrize("text", ["-c 0", "-c 2", "-np -1", "-np 4", "-b 4", "-ngl 999", "-t -1"])
def test_values_at_the_edges_of_the_ranges_are_accepted(text: str) -> None:
    flags(text)
