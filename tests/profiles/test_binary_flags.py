"""Profiles checked against the llama-server that will run them, when it is on this host:
a newer build's flag is accepted (with a note), a flag the binary lacks names the binary."""

from __future__ import annotations

from pathlib import Path

import pytest
from help_binaries import binary_like

from llamasup.errors import ProfileError
from llamasup.profiles.load import load_profiles


def _profile(tmp_path: Path, binary: Path, args: str) -> Path:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    path = tmp_path / "p.yaml"
    path.write_text(
        f"server:\n  binary: {binary}\n  state_dir: {tmp_path / 'state'}\n"
        f"models:\n  m:\n    path: {model}\n    args: [{args}]\n"
    )
    return path


def test_a_flag_a_newer_build_lists_validates_against_it_with_a_note(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    newer = binary_like(tmp_path, fake_server_bin, "newer-synthetic.txt", "99999")
    profiles = load_profiles(_profile(tmp_path, newer, "--kv-offload-policy, smart"), {})
    assert profiles.models["m"].args.argv() == ("--kv-offload-policy", "smart")
    (note,) = [w for w in profiles.warnings if "kv-offload-policy" in w.message]
    assert "accepted as a load-time flag because" in note.message
    assert "b99999-recorded" in note.message


def test_the_same_flag_against_b11434_is_an_error(tmp_path: Path, fake_server_bin: Path) -> None:
    current = binary_like(tmp_path, fake_server_bin, "b11434.txt", "11434")
    with pytest.raises(ProfileError) as caught:
        load_profiles(_profile(tmp_path, current, "--kv-offload-policy, smart"), {})
    messages = " ".join(issue.message for issue in caught.value.issues)
    assert "unknown llama-server flag" in messages and "--kv-offload-policy" in messages


def test_without_the_binary_here_only_the_table_applies(tmp_path: Path) -> None:
    missing = tmp_path / "not-installed" / "llama-server"
    profiles = load_profiles(_profile(tmp_path, missing, "-c, 4096"), {})
    assert profiles.models["m"].args.argv() == ("--ctx-size", "4096")
