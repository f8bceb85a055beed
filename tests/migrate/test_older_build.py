"""A llama-swap config written for an older llama-server build (b10001, built here from the
PyPI sdist; its ``--help`` is recorded in tests/fixtures/llama-server-help) imports, validates
against that build and runs on it: the canonical ``--load-mode`` is spoken as b10001's
``--no-mmap --mlock`` at launch, and a flag b10001 lacks is an error naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from help_binaries import binary_like
from service_helpers import chat, running_service

from llamasup.errors import ProfileError
from llamasup.profiles.load import load_profiles

from .import_helpers import import_swap_text

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _swap_config(binary: Path, model: Path, argv_log: Path, extra: str) -> str:
    return (
        "models:\n"
        "  old:\n"
        f"    cmd: {binary} -m {model} --port ${{PORT}} -ngl 0 {extra}\n"
        "    env:\n"
        f"      - FAKE_LLAMA_ARGV_LOG={argv_log}\n"
    )


async def test_a_config_for_b10001_runs_on_b10001_in_its_spellings(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    old = binary_like(tmp_path, fake_server_bin, "b10001.txt", "10001")
    model = tmp_path / "old.gguf"
    model.write_bytes(b"GGUF fake model")
    argv_log = tmp_path / "argv.jsonl"
    imported = import_swap_text(_swap_config(old, model, argv_log, "--no-mmap --mlock"), tmp_path)
    # the profile keeps the user's words; its spec is canonical (keys do not change with a
    # spelling) ...
    assert "args: [-ngl, 0, --no-mmap, --mlock]" in imported.text
    assert imported.argv("old")[3:7] == ["--load-mode", "mlock", "--n-gpu-layers", "0"]
    profile = tmp_path / "profiles.yaml"
    profile.write_text(imported.text)
    async with running_service(profile, watch=False) as running:
        await chat(running.client, "old")
    (record,) = [json.loads(line) for line in argv_log.read_text().splitlines()]
    argv = [str(arg) for arg in record["argv"]]
    # ... and b10001's own words on its command line
    assert "--load-mode" not in argv
    assert argv.count("--no-mmap") == 1 and argv.count("--mlock") == 1


def test_a_flag_b10001_lacks_is_an_error_naming_the_build(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    old = binary_like(tmp_path, fake_server_bin, "b10001.txt", "10001")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    path = tmp_path / "p.yaml"
    path.write_text(
        f"server:\n  binary: {old}\n  state_dir: {tmp_path / 'state'}\n"
        f"models:\n  m:\n    path: {model}\n    args: [--kv-unified-per-slot, '2']\n"
    )
    with pytest.raises(ProfileError) as caught:
        load_profiles(path, {})
    messages = " ".join(issue.message for issue in caught.value.issues)
    assert f"{old} (" in messages and "10001" in messages
    assert "has no --kv-unified-per-slot" in messages
