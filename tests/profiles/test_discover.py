"""Finding a profile set, and its ``server.listen`` read without validating the set."""

from __future__ import annotations

from pathlib import Path

from llamasup.profiles.discover import default_profile_path, read_listen


def test_read_listen_takes_the_first_literal_address_with_a_host(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("server: {listen: '${env.LISTEN}'}\n")  # only the unit knows
    (tmp_path / "b.yaml").write_text("server: [not, a, mapping\n")  # not even YAML
    (tmp_path / "c.yaml").write_text("server: {listen: ':8402'}\n")  # no host to connect to
    (tmp_path / "d.yml").write_text("server: {listen: '[::1]:9000', max_sidecar: typo}\n")
    (tmp_path / "e.yaml").write_text("server: {listen: '10.0.0.1:9001'}\n")
    assert read_listen(tmp_path) == ("::1", 9000)


def test_read_listen_without_a_listen_is_none(tmp_path: Path) -> None:
    single = tmp_path / "profiles.yaml"
    single.write_text("models: {m: {path: m.gguf}}\n")
    assert read_listen(single) is None


def test_default_profile_path_prefers_the_environment(tmp_path: Path) -> None:
    chosen = tmp_path / "elsewhere"
    assert default_profile_path({"LLAMASUP_PROFILES": str(chosen)}) == chosen
