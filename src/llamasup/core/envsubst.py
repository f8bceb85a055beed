"""``${env.NAME}`` substitution in profile values.

``${env.NAME}`` is replaced by the variable (missing → an error), ``${env.NAME:-default}`` falls
back to the default, and ``$${`` writes a literal ``${``. ``${PORT}``, ``${HOST}`` and
``${MODEL_ID}`` are left for spawn time (only ``command:`` may use them). A value that is
exactly one ``${env.X}`` takes the YAML type of what it expands to, so ``max_sidecars:
${env.N}`` with ``N=2`` is the integer 2.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from llamasup.core.yamlsrc import KeyPath

SPAWN_PLACEHOLDERS = frozenset({"PORT", "HOST", "MODEL_ID"})
_PLACEHOLDER_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_ENV_RE = re.compile(r"^env\.([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)

IssueSink = Callable[[KeyPath, str], None]


def substitute(data: Any, environ: Mapping[str, str], report: IssueSink) -> Any:
    """A copy of ``data`` with placeholders in every string expanded."""
    return _walk(data, (), environ, report)


def _walk(value: Any, path: KeyPath, environ: Mapping[str, str], report: IssueSink) -> Any:
    if isinstance(value, dict):
        return {k: _walk(v, (*path, k), environ, report) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, (*path, i), environ, report) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        return _expand(value, path, environ, report)
    return value


def _expand(text: str, path: KeyPath, environ: Mapping[str, str], report: IssueSink) -> Any:
    whole = _PLACEHOLDER_RE.fullmatch(text)

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        inner = match.group(1)
        if inner in SPAWN_PLACEHOLDERS:
            return match.group(0)
        env_match = _ENV_RE.match(inner)
        if env_match is None:
            report(
                path,
                f"unknown placeholder ${{{inner}}}: use ${{env.NAME}} for an environment "
                "variable (or $${ for a literal ${)",
            )
            return match.group(0)
        name, default = env_match.group(1), env_match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        report(path, f"environment variable {name} is not set (referenced as ${{env.{name}}})")
        return ""

    expanded = _PLACEHOLDER_RE.sub(replace, text)
    if whole is not None and whole.group(1) is not None and whole.group(1).startswith("env."):
        return _scalar(expanded)
    return expanded


def _scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, str | int | float | bool) or value is None else text
