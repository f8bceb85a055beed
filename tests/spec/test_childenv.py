"""The environment a sidecar gets: nothing llama-server would read as a flag is inherited."""

from __future__ import annotations

from pathlib import Path

from llamasup.flags.table import TABLE
from llamasup.spec.childenv import child_environment, is_scrubbed


def test_child_environment_scrubs_flag_variables_and_isolates_config(tmp_path: Path) -> None:
    base = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LLAMA_ARG_PORT": "1",
        "LLAMA_ARG_MODEL": "/x.gguf",
        "LLAMA_API_KEY": "secret",
        "HF_TOKEN": "hf_secret",
        "MTMD_BACKEND_DEVICE": "gpu9",
        "LLAMA_CACHE": "/cache",
        "XDG_CONFIG_HOME": "/home/me/.config",
    }
    env = child_environment(base, {"LLAMA_ARG_THREADS": "2", "FOO": "bar"}, tmp_path / "cfg")
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LLAMA_CACHE": "/cache",
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "LLAMA_ARG_THREADS": "2",
        "FOO": "bar",
    }


def test_the_profile_may_set_a_scrubbed_variable_and_the_config_home(tmp_path: Path) -> None:
    profile = {"HF_TOKEN": "from-profile", "XDG_CONFIG_HOME": "/etc/mine"}
    env = child_environment({"HF_TOKEN": "inherited"}, profile, tmp_path / "cfg")
    assert env == profile


def test_without_a_config_home_the_inherited_one_stays() -> None:
    env = child_environment({"XDG_CONFIG_HOME": "/home/me/.config"}, {}, None)
    assert env == {"XDG_CONFIG_HOME": "/home/me/.config"}


def test_every_variable_the_flag_table_names_is_scrubbed() -> None:
    names = {flag.env for flag in TABLE if flag.env}
    assert {"LLAMA_API_KEY", "HF_TOKEN", "MTMD_BACKEND_DEVICE"} <= names
    assert all(is_scrubbed(name) for name in names)
    assert not is_scrubbed("LLAMA_CACHE") and not is_scrubbed("PATH")
