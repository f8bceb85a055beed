"""The shape of a llama-swap config: every documented key with the type llama-swap accepts.

llama-swap refuses a config whose values have the wrong type (its YAML decoder does), so the
import does too, listing every such value at once. Because llama-swap replaces
``${env.NAME}`` in the text before parsing, ``ttl: ${env.TTL}`` is a number there: a number or
boolean setting written as one environment reference is read from the environment here first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from llamasup.migrate.llama_swap.cmd import ENV_REF

_NUMBER, _BOOL, _TEXT, _LIST, _MAP = (int,), (bool,), (str, int, float, bool), (list,), (dict,)
TOP = {
    "healthCheckTimeout": _NUMBER, "globalTTL": _NUMBER, "startPort": _NUMBER,
    "logLevel": _TEXT, "macros": _MAP, "apiKeys": _LIST, "groups": _MAP, "hooks": _MAP,
    "models": _MAP,
}  # fmt: skip
MODEL = {
    "cmd": _TEXT, "cmdStop": _TEXT, "proxy": _TEXT, "checkEndpoint": _TEXT, "ttl": _NUMBER,
    "aliases": _LIST, "env": _LIST, "unlisted": _BOOL, "useModelName": _TEXT, "name": _TEXT,
    "description": _TEXT, "concurrencyLimit": _NUMBER, "filters": _MAP, "macros": _MAP,
}  # fmt: skip
FILTERS = {"stripParams": _TEXT, "strip_params": _TEXT, "setParams": _MAP, "setParamsByID": _MAP}
GROUP = {"swap": _BOOL, "exclusive": _BOOL, "persistent": _BOOL, "members": _LIST}
_NAMES = {_NUMBER: "a whole number", _BOOL: "true or false", _TEXT: "a string", _LIST: "a list"}


def shape_problems(
    data: dict[str, Any], environ: Mapping[str, str], missing: set[str]
) -> list[str]:
    """Values llama-swap would refuse for their type; resolves env-referenced numbers in place."""
    problems = _check(data, TOP, "", environ, missing)
    for model_id, model in (data.get("models") or {}).items():
        if not isinstance(model, dict):
            problems.append(f"models.{model_id}: a mapping with at least cmd")
            continue
        where = f"models.{model_id}"
        problems += _check(model, MODEL, where, environ, missing)
        if isinstance(model.get("filters"), dict):
            problems += _check(model["filters"], FILTERS, f"{where}.filters", environ, missing)
        for i, alias in enumerate(model.get("aliases") or []):
            if not isinstance(alias, str | int | float):
                problems.append(
                    f"{where}.aliases[{i}]: a name (llama-swap reads aliases as strings)"
                )
    for group_id, group in (data.get("groups") or {}).items():
        if not isinstance(group, dict):
            problems.append(f"groups.{group_id}: a mapping with members")
        else:
            problems += _check(group, GROUP, f"groups.{group_id}", environ, missing)
    hooks = data.get("hooks") or {}
    startup = hooks.get("on_startup") if isinstance(hooks, dict) else None
    if startup is not None and not isinstance(startup, dict):
        problems.append("hooks.on_startup: a mapping with preload")
    elif isinstance(startup, dict) and not isinstance(startup.get("preload") or [], list):
        problems.append("hooks.on_startup.preload: a list of model ids")
    return problems


def _check(
    table: dict[str, Any],
    rules: Mapping[str, tuple[type, ...]],
    where: str,
    environ: Mapping[str, str],
    missing: set[str],
) -> list[str]:
    problems = []
    for key, types in rules.items():
        value = table.get(key)
        if value is None:
            continue
        if types in (_NUMBER, _BOOL) and isinstance(value, str) and ENV_REF.fullmatch(value):
            value = table[key] = _from_env(value, environ, missing)
            if value is None:
                continue
        wrong = isinstance(value, bool) and types == _NUMBER
        if wrong or not isinstance(value, types):
            path = f"{where}.{key}" if where else key
            expected = _NAMES.get(types, "a mapping")
            problems.append(f"{path}: expected {expected}, got {value!r}")
    return problems


def _from_env(ref: str, environ: Mapping[str, str], missing: set[str]) -> Any:
    match = ENV_REF.fullmatch(ref)
    assert match is not None
    name = match.group(1)
    if name not in environ:
        missing.add(name)
        return None
    try:
        return yaml.safe_load(environ[name])
    except yaml.YAMLError:
        return environ[name]
