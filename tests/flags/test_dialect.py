"""Flags as each llama-server build spells them, from its own ``--help`` (recorded texts in
tests/fixtures/llama-server-help: b11434 built here, b10001 built here from the PyPI sdist, and
a synthetic newer build with one extra flag; see PROVENANCE.md there)."""

from __future__ import annotations

import pytest
from help_binaries import HELP_TEXTS

from llamasup.errors import FlagError
from llamasup.flags.dialect import BinaryFlags, for_binary
from llamasup.flags.flagset import parse
from llamasup.flags.vocabulary import Kind, Layer


def _flags(name: str, version: str) -> BinaryFlags:
    return BinaryFlags.from_help(f"/opt/{name}", version, (HELP_TEXTS / name).read_text())


CURRENT = _flags("b11434.txt", "b11434-pypi-sdist")
OLD = _flags("b10001.txt", "b10001-pypi-sdist")
NEWER = _flags("newer-synthetic.txt", "b99999-synthetic")


def _argv(
    text: str, layer: Layer = Layer.MODEL, binary: BinaryFlags | None = None
) -> tuple[str, ...]:
    result = parse(text.split(), layer)
    assert result.errors == ()
    return result.flags.argv()


def test_the_build_the_table_describes_takes_the_canonical_argv_as_is() -> None:
    argv = _argv("-c 4096 --no-mmap -fa on --jinja -ngl 99 --cache-type-k q8_0")
    assert for_binary(argv, CURRENT) == list(argv)


def test_a_flag_only_a_newer_build_knows_is_accepted_in_trusted_layers_only() -> None:
    unknown = parse(["--kv-offload-policy", "smart"], Layer.MODEL)
    assert [e.flag for e in unknown.errors] == ["--kv-offload-policy"]
    accepted = parse(["--kv-offload-policy", "smart"], Layer.MODEL, extra=NEWER.unknown_flag)
    assert accepted.errors == ()
    (setting,) = accepted.flags.settings
    assert (setting.flag.kind, setting.value) == (Kind.LOAD, "smart")
    assert for_binary(accepted.flags.argv(), NEWER) == ["--kv-offload-policy", "smart"]
    header = parse(["--kv-offload-policy", "smart"], Layer.HEADER, extra=NEWER.unknown_flag)
    assert header.errors, "a request header never gets a flag llamasup does not know"
    with pytest.raises(FlagError, match=r"/opt/b11434.txt \(b11434-pypi-sdist\) has no"):
        for_binary(accepted.flags.argv(), CURRENT)


@pytest.mark.parametrize(
    ("mode", "spoken"),
    [
        ("none", ["--no-mmap"]),
        ("mlock", ["--no-mmap", "--mlock"]),
        ("mmap+mlock", ["--mmap", "--mlock"]),
        ("mmap", ["--mmap"]),
        ("dio", ["--direct-io"]),
        ("auto", []),
    ],
)
def test_b10001_gets_load_mode_in_its_own_words(mode: str, spoken: list[str]) -> None:
    argv = _argv(f"--load-mode {mode} -c 2048")
    assert for_binary(argv, OLD) == ["--ctx-size", "2048", *spoken]
    assert for_binary(argv, CURRENT) == list(argv)


def test_a_flag_added_after_b10001_is_an_error_naming_it() -> None:
    argv = _argv("--kv-unified-per-slot 2")
    with pytest.raises(FlagError, match=r"/opt/b10001.txt \(b10001-pypi-sdist\) has no"):
        for_binary(argv, OLD)
