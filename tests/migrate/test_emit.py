"""The hand-written YAML of imported profiles reads back as the values that were written."""

from __future__ import annotations

import pytest
import yaml

from llamasup.flags.flagset import tokenize
from llamasup.migrate.draft import Draft, Entry, duration, sanitize_id
from llamasup.migrate.emit import render_single, scalar

AWKWARD = [
    "on", "off", "yes", "true", "null", "~", "010", "0x1f", "1_000", ".5", "1e3", "0.7",
    "a: b", "#x", "x #y", "-", "- x", "[x]", "{x}", "${env.HOME}/m", "it's", 'say "hi"',
    "a,b", "*ref", "&anchor", "!tag", "%x", "@x", "`x`", "|", ">", "?", " lead", "trail ",
    "C:\\models\\x.gguf", "ünïcödé", "",
]  # fmt: skip


@pytest.mark.parametrize("text", AWKWARD)
def test_strict_scalars_read_back_as_the_same_string(text: str) -> None:
    assert yaml.safe_load(f"k: {scalar(text)}") == {"k": text}
    assert yaml.safe_load(f"k: [{scalar(text)}]") == {"k": [text]}


@pytest.mark.parametrize("text", AWKWARD)
def test_flag_tokens_read_back_as_the_same_token(text: str) -> None:
    loaded = yaml.safe_load(f"args: [{scalar(text, 'args')}]")["args"]
    assert tokenize(loaded) == [text]


def test_numbers_and_on_off_stay_plain_in_flag_lists() -> None:
    assert [scalar(t, "args") for t in ("4096", "0.7", "on", "010")] == [
        "4096",
        "0.7",
        "on",
        '"010"',
    ]


def test_a_disabled_entry_is_commented_out_with_its_indentation() -> None:
    draft = Draft("x", models={"m": Entry({"command": ["a"], "env": {"K": "v"}}, disabled=True)})
    text = render_single(draft)["profiles.yaml"]
    assert "  # m:\n  #   command: [a]\n  #   env:\n  #     K: v\n" in text
    # a section of commented-out entries only is still a mapping, so the profile loads
    assert yaml.safe_load(text) == {"version": 1, "models": {}}


def test_durations_and_ids() -> None:
    assert [duration(s) for s in (0, 45, 60, 300, 3600, 86400, 90, 1.5)] == [
        0, "45s", "1m", "5m", "1h", "1d", "90s", "1.5s",
    ]  # fmt: skip
    taken = {"a-b"}
    assert sanitize_id("a/b", taken) == "a-b-2"
    assert sanitize_id("  _x y ", set()) == "x-y"
    assert sanitize_id("!!!", set()) == "model"
