"""The environment a sidecar process gets.

llama-server reads many settings from ``LLAMA_ARG_*`` variables (and ``LLAMA_API_KEY``,
``HF_TOKEN``, ``MTMD_BACKEND_DEVICE``). A child must not pick those up from whatever shell
started llamasup: only the profile decides. The names come from the flag table, so a flag
added there is scrubbed too, and ``render`` lists exactly what a sidecar loses.

``XDG_CONFIG_HOME`` is pointed at an empty directory because this llama-server build silently
applies ``${XDG_CONFIG_HOME:-~/.config}/llama.cpp/config.ini``; a profile may still set it.
(It also applies ``/etc/llama.cpp/config.ini``, which no environment can hide: ``doctor``
warns about that file.)
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path

from llamasup.flags.table import TABLE

SCRUB_PREFIXES = ("LLAMA_ARG_",)


@cache
def _table_env_names() -> frozenset[str]:
    return frozenset(flag.env for flag in TABLE if flag.env)


def is_scrubbed(name: str) -> bool:
    """Whether an inherited variable is dropped from a sidecar's environment."""
    return name.startswith(SCRUB_PREFIXES) or name in _table_env_names()


def child_environment(
    inherited: Mapping[str, str], profile_env: Mapping[str, str], config_home: Path | None
) -> dict[str, str]:
    """``inherited`` minus what llama-server would read as flags, then llamasup's, then the
    profile's (which may set any of them on purpose)."""
    env = {name: value for name, value in inherited.items() if not is_scrubbed(name)}
    if config_home is not None:
        env["XDG_CONFIG_HOME"] = str(config_home)
    env.update(profile_env)
    return env
