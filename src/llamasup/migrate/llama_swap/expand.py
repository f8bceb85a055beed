"""llama-swap's macros, applied to the whole config the way its loader does, before anything
else reads it (``internal/config/macros.go`` resolveConfigMacros).

In order: every ``${env.NAME}`` anywhere in the document (comments aside) must be set, as
llama-swap checks them all, used or not; macro declarations are checked (names, reserved
``PID``/``PORT``/``MODEL_ID``, scalar values, no self-reference); global macros expand in
every top-level value but ``models``; each model's own macros (over the global ones, after
``MODEL_ID``) expand in every value of the model, ``setParamsByID`` keys included. A value
that is exactly one macro takes the macro's type (``startPort: ${FIRST}`` is a number).

``${PORT}`` is llama-swap's port number for models whose ``cmd`` asks for one, numbered from
``startPort`` in model id order. It stays a placeholder in ``cmd``, ``proxy``,
``checkEndpoint`` and ``env`` (llamasup hands out ports itself); where it names something
(a ``setParamsByID`` key, a name or description) llama-swap's number is written in.
Whatever macro is left unexpanded in a value llama-swap reads is an error, as it is there.
``${env.NAME}`` references stay as written: the importer keeps them as references.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llamasup.migrate.llama_swap.cmd import ENV_REF, MACRO_REF, PORT, macro_text, strip_comments

MACRO_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
RESERVED = ("PID", "PORT", "MODEL_ID")
DEFAULT_PROXY = "http://localhost:${PORT}"
DEFAULT_START_PORT = 5800
#: top-level keys of llama-swap's Config: only their values are checked for unknown macros
CONFIG_KEYS = frozenset(
    {
        "healthCheckTimeout", "logRequests", "logLevel", "logTimeFormat", "logToStdout",
        "metricsMaxInMemory", "captureBuffer", "store", "ui", "performance", "globalTTL",
        "unloadTimeout", "models", "profiles", "selectors", "routing", "groups", "matrix",
        "macros", "startPort", "hooks", "sendLoadingState", "includeAliasesInList", "apiKeys",
        "peers", "upstream",
    }
)  # fmt: skip
#: model values where ${PORT} stays a placeholder for llamasup's own port
_PORT_KEPT = ("cmd", "proxy", "checkEndpoint", "env")


@dataclass
class Expanded:
    """The config with macros applied, and llama-swap's port number of each model using one."""

    data: dict[str, Any]
    ports: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def expand(data: dict[str, Any], environ: Mapping[str, str]) -> Expanded:
    result = Expanded(data)
    result.problems += env_problems(data, environ)
    global_macros = _declared(data.get("macros"), "macros", result.problems)
    raw_models = data.get("models")
    models: dict[Any, Any] = raw_models if isinstance(raw_models, dict) else {}
    declared: dict[str, list[tuple[str, Any]]] = {}
    for model_id, model in models.items():
        own = model.get("macros") if isinstance(model, dict) else None
        declared[str(model_id)] = _declared(own, f"models.{model_id}.macros", result.problems)
    if result.problems:
        return result
    for key in [k for k in data if k not in ("models", "macros")]:
        data[key] = substitute(data[key], global_macros)
    start = data.get("startPort", DEFAULT_START_PORT)
    next_port = start if isinstance(start, int) and not isinstance(start, bool) else 0
    for model_id in sorted(models, key=str):
        model = models[model_id]
        if not isinstance(model, dict):
            continue
        name = str(model_id)
        macros = [("MODEL_ID", name), *global_macros]
        for macro, value in declared[name]:
            at = next((i for i, (n, _) in enumerate(macros) if n == macro), None)
            if at is None:
                macros.append((macro, value))
            else:
                macros[at] = (macro, value)
        models[model_id] = model = _prepare(model)
        expanded = substitute(model, macros)
        _substitute_keys(expanded, macros, name, result.problems)
        if _uses_port(expanded, name, result.problems):
            result.ports[name] = next_port
            _number_port(expanded, next_port)
            next_port += 1
        models[model_id] = expanded
    result.problems += leftover_macros(data, result.ports)
    return result


def env_problems(data: Any, environ: Mapping[str, str]) -> list[str]:
    """Every ``${env.NAME}`` in keys or values must be set, and hold no line break."""
    names: dict[str, None] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(key)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str):
            names.update(dict.fromkeys(ENV_REF.findall(node)))

    walk(data)
    problems = []
    for name in names:
        if name not in environ:
            problems.append(
                f"environment variable {name} is not set (llama-swap refuses a config that "
                "names an unset variable anywhere)"
            )
        elif any(c in environ[name] for c in "\n\r\0"):
            problems.append(f"environment variable {name} holds a line break (llama-swap refuses)")
    return problems


def _declared(raw: Any, where: str, problems: list[str]) -> list[tuple[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        problems.append(f"{where}: a mapping of macro name → value")
        return []
    for name, value in raw.items():
        text = str(name)
        if len(text) >= 64 or not MACRO_NAME.match(text):
            problems.append(f"{where}.{text}: macro names match ^[a-zA-Z0-9_-]+$, under 64 chars")
        elif not isinstance(value, str | int | float | bool):
            problems.append(f"{where}.{text}: a macro value is a string, number or boolean")
        elif isinstance(value, str) and f"${{{text}}}" in value:
            problems.append(f"{where}.{text}: a macro cannot refer to itself")
        elif text in RESERVED:
            problems.append(f"{where}.{text}: {text} is reserved (llama-swap sets it)")
    return [(str(name), value) for name, value in raw.items()]


def _prepare(model: dict[str, Any]) -> dict[str, Any]:
    """Macro blocks out, comment lines out of commands, the default proxy in."""
    prepared = {k: v for k, v in model.items() if k != "macros"}
    for key in ("cmd", "cmdStop"):
        if isinstance(prepared.get(key), str):
            prepared[key] = strip_comments(prepared[key])
    if prepared.get("proxy") is None:
        prepared["proxy"] = DEFAULT_PROXY
    return prepared


def substitute(value: Any, macros: list[tuple[str, Any]]) -> Any:
    """Each macro in turn, last declared first, through strings, lists and mapping values."""
    for name, macro in reversed(macros):
        value = _one(value, f"${{{name}}}", macro)
    return value


def _one(value: Any, slug: str, macro: Any) -> Any:
    if isinstance(value, str):
        if value == slug:
            return macro
        return value.replace(slug, macro_text(macro)) if slug in value else value
    if isinstance(value, dict):
        return {key: _one(item, slug, macro) for key, item in value.items()}
    if isinstance(value, list):
        return [_one(item, slug, macro) for item in value]
    return value


def _by_id(model: Mapping[str, Any]) -> dict[Any, Any] | None:
    filters = model.get("filters")
    by_id = filters.get("setParamsByID") if isinstance(filters, dict) else None
    return by_id if isinstance(by_id, dict) else None


def _substitute_keys(
    model: dict[str, Any], macros: list[tuple[str, Any]], model_id: str, problems: list[str]
) -> None:
    by_id = _by_id(model)
    if by_id is None:
        return
    renamed: dict[str, Any] = {}
    for key, params in by_id.items():
        new = str(key)
        for name, macro in reversed(macros):
            new = new.replace(f"${{{name}}}", macro_text(macro))
        if new in renamed:
            problems.append(
                f"models.{model_id}.filters.setParamsByID: keys {key!r} and {new!r} name the "
                "same model id"
            )
        renamed[new] = params
    model["filters"]["setParamsByID"] = renamed


def _uses_port(model: Mapping[str, Any], model_id: str, problems: list[str]) -> bool:
    in_cmd = PORT in str(model.get("cmd") or "")
    if not in_cmd and PORT in str(model.get("proxy") or ""):
        problems.append(
            f"models.{model_id}.proxy: uses ${{PORT}} but cmd does not; llama-swap hands out a "
            "port only to a cmd that uses ${PORT} (put the port the server listens on in proxy)"
        )
    return in_cmd


def _number_port(model: dict[str, Any], port: int) -> None:
    for key in list(model):
        if key not in _PORT_KEPT and key != "filters":
            model[key] = _one(model[key], PORT, port)
    filters = model.get("filters")
    if isinstance(filters, dict):
        model["filters"] = _one(filters, PORT, port)
    by_id = _by_id(model)
    if by_id is not None:
        model["filters"]["setParamsByID"] = {
            str(key).replace(PORT, str(port)): value for key, value in by_id.items()
        }


def leftover_macros(data: Mapping[str, Any], ports: Mapping[str, int]) -> list[str]:
    """Macros nothing defined, in the values llama-swap reads (``${PID}`` only in cmdStop)."""
    problems: list[str] = []
    for key, value in data.items():
        if key not in CONFIG_KEYS or key == "macros":
            continue
        if key != "models":
            problems += _unknown(value, key, allowed=())
            continue
        for model_id, model in value.items() if isinstance(value, dict) else ():
            for field_name, field_value in model.items() if isinstance(model, dict) else ():
                allowed: tuple[str, ...] = ("PID",) if field_name == "cmdStop" else ()
                if model_id in ports and field_name in _PORT_KEPT:
                    allowed += ("PORT",)
                where = f"models.{model_id}.{field_name}"
                problems += _unknown(field_value, where, allowed)
            by_id = _by_id(model) if isinstance(model, dict) else None
            for name in by_id or ():
                for macro in MACRO_REF.findall(str(name)):
                    problems.append(
                        f"models.{model_id}.filters.setParamsByID: unknown macro ${{{macro}}} "
                        f"in key {name!r}"
                    )
    return problems


def _unknown(value: Any, where: str, allowed: tuple[str, ...]) -> list[str]:
    if isinstance(value, str):
        found = [m for m in MACRO_REF.findall(value) if m not in allowed]
        return [f"{where}: unknown macro ${{{found[0]}}}"] if found else []
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _unknown(item, f"{where}.{key}", allowed)]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _unknown(item, f"{where}[{i}]", allowed)]
    return []
