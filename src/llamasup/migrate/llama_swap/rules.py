"""The checks llama-swap's loader makes after decoding (``internal/config/load.go`` and the
files it calls): a config they refuse is refused by the import too, with the reason.

Also normalises the routing block the way the loader does: current llama-swap reads groups
and the matrix from ``routing.router.settings`` (``use: group`` or ``matrix``), the older
top-level ``groups``/``matrix`` keys still work, and a config may use one style only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_VAR_KEY = re.compile(r"^[a-zA-Z0-9.-]{1,32}$")
_DSL_TOKEN = re.compile(r"\s+|[&|()]|\+?[\w.-]+|.", re.UNICODE)
_MODALITIES = frozenset({"text", "audio", "image"})
_STRATEGIES = frozenset({"warm", "pin", "spillover"})
_LOG_TO_STDOUT = frozenset({"proxy", "upstream", "both", "none"})


def routing(data: dict[str, Any]) -> list[str]:
    """Move ``routing.router.settings`` groups or matrix to the top level; the problems."""
    raw = data.get("routing")
    if raw is None:
        return []
    if not isinstance(raw, dict):
        return ["routing: a mapping with router and scheduler"]
    router = raw.get("router") or {}
    settings = router.get("settings") or {} if isinstance(router, dict) else {}
    if not isinstance(router, dict) or not isinstance(settings, dict):
        return ["routing.router: a mapping with use and settings"]
    use = router.get("use") or ""
    legacy = data.get("matrix") is not None or bool(data.get("groups"))
    if legacy and (use or settings.get("matrix") is not None or settings.get("groups")):
        return [
            "routing.router and the top-level groups/matrix: llama-swap accepts one style; "
            "move the top-level keys into routing.router.settings"
        ]
    if legacy:
        return []
    if use == "matrix":
        if settings.get("matrix") is None:
            return ["routing.router.use is matrix but routing.router.settings.matrix is not set"]
        data["matrix"] = settings["matrix"]
    elif use in ("group", ""):
        if settings.get("groups") is not None:
            data["groups"] = settings["groups"]
    else:
        return [f"routing.router.use: {use!r} is not a router llama-swap has (group, matrix)"]
    return []


def refusals(data: Mapping[str, Any]) -> list[str]:
    """Every reason llama-swap's loader would refuse the (macro-expanded, well-typed) config."""
    models: Mapping[str, Any] = data.get("models") or {}
    aliases, problems = _alias_owners(models)
    problems += _set_params_by_id(models, aliases)
    peer_names = _peer_models(data)
    names = {str(m) for m in models} | set(aliases) | _by_id_keys(models)
    problems += _peer_namespace(peer_names, names)
    names |= {name for pair in peer_names for name in pair}
    problems += _top_level(data)
    for model_id, model in models.items():
        problems += _model(str(model_id), model)
    problems += _scheduler(data, names)
    problems += _matrix(data, models)
    problems += _groups(data)
    problems += _profiles(data, names)
    problems += _selectors(data, models, aliases)
    return problems


def _alias_owners(models: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """alias → model, and a problem for each alias two models claim."""
    owner: dict[str, str] = {}
    problems: list[str] = []
    for model_id, model in models.items():
        for alias in model.get("aliases") or [] if isinstance(model, dict) else []:
            name = str(alias)
            if name in owner:
                problems.append(
                    f"models.{model_id}.aliases: {name!r} is already an alias of "
                    f"{owner[name]!r} (llama-swap refuses a duplicate alias)"
                )
                continue
            owner[name] = str(model_id)
    return owner, problems


def _by_id_keys(models: Mapping[str, Any]) -> set[str]:
    """setParamsByID keys: llama-swap registers them as aliases of their model."""
    keys: set[str] = set()
    for model in models.values():
        filters = model.get("filters") if isinstance(model, dict) else None
        by_id = filters.get("setParamsByID") if isinstance(filters, dict) else None
        keys |= {str(key) for key in by_id or {}}
    return keys


def _peer_models(data: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(model id, peer/model id) of every model a peer serves."""
    peers = data.get("peers")
    found = set()
    for peer_id, peer in peers.items() if isinstance(peers, dict) else ():
        for model in peer.get("models") or [] if isinstance(peer, dict) else []:
            found.add((str(model), f"{peer_id}/{model}"))
    return found


def _peer_namespace(peer_names: set[tuple[str, str]], names: set[str]) -> list[str]:
    return [
        f"peers: {qualified!r} is both a peer's model and a local model id or alias "
        "(llama-swap refuses the clash)"
        for _, qualified in sorted(peer_names)
        if qualified in names
    ]


def _set_params_by_id(models: Mapping[str, Any], aliases: Mapping[str, str]) -> list[str]:
    """setParamsByID keys become aliases of their model: they must not name another one."""
    problems = []
    taken = dict(aliases)
    for model_id in sorted(models, key=str):
        model = models[model_id]
        filters = model.get("filters") if isinstance(model, dict) else None
        by_id = filters.get("setParamsByID") if isinstance(filters, dict) else None
        for key in by_id or {}:
            where = f"models.{model_id}.filters.setParamsByID.{key}"
            if key == model_id:
                continue
            if key in models:
                problems.append(f"{where}: the id of another model (llama-swap refuses it)")
            elif taken.get(key, model_id) != model_id:
                problems.append(f"{where}: already an alias of {taken[key]!r} (llama-swap refuses)")
            else:
                taken[key] = str(model_id)
    return problems


def _top_level(data: Mapping[str, Any]) -> list[str]:
    problems = []
    if isinstance(data.get("unloadTimeout"), int) and data["unloadTimeout"] < 0:
        problems.append("unloadTimeout: seconds >= 0")
    log_to = data.get("logToStdout")
    if log_to is not None and log_to not in _LOG_TO_STDOUT:
        problems.append(f"logToStdout: {log_to!r} is not proxy, upstream, both or none")
    for i, key in enumerate(data.get("apiKeys") or []):
        if key in ("", None):
            problems.append(f"apiKeys[{i}]: empty (llama-swap refuses an empty key)")
        elif " " in str(key):
            problems.append(f"apiKeys[{i}]: an API key cannot contain spaces")
    performance = data.get("performance")
    every = performance.get("every") if isinstance(performance, dict) else None
    if every is not None and _seconds(every) < 5:
        problems.append(f"performance.every: at least 5s, got {every}")
    return problems


def _seconds(value: Any) -> float:
    """A Go duration (``500ms``, ``1m30s``) or a number of nanoseconds, in seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value / 1e9
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"([\d.]+)(ns|us|µs|ms|s|m|h)", str(value))
    return sum(float(number) * units[unit] for number, unit in parts) if parts else 5.0


def _model(model_id: str, model: Any) -> list[str]:
    if not isinstance(model, dict):
        return []
    where = f"models.{model_id}"
    problems = []
    if isinstance(model.get("unloadTimeout"), int) and model["unloadTimeout"] < 0:
        problems.append(f"{where}.unloadTimeout: seconds >= 0")
    caps = model.get("capabilities")
    if isinstance(caps, dict):
        for key in ("in", "out"):
            for item in caps.get(key) or []:
                if item not in _MODALITIES:
                    problems.append(f"{where}.capabilities.{key}: {item!r} is not text/audio/image")
        if isinstance(caps.get("context"), int) and caps["context"] < 0:
            problems.append(f"{where}.capabilities.context: >= 0")
    return problems


def _scheduler(data: Mapping[str, Any], names: set[str]) -> list[str]:
    raw = data.get("routing")
    scheduler = raw.get("scheduler") if isinstance(raw, dict) else None
    if not isinstance(scheduler, dict):
        return []
    use = scheduler.get("use") or "fifo"
    if use != "fifo":
        return [f"routing.scheduler.use: {use!r} is not a scheduler llama-swap has (fifo)"]
    return [
        f"routing.scheduler.settings.fifo.priority.{name}: no such model"
        for name in fifo_priorities(data)
        if name not in names
    ]


def fifo_priorities(data: Mapping[str, Any]) -> dict[str, Any]:
    raw = data.get("routing")
    scheduler = raw.get("scheduler") if isinstance(raw, dict) else None
    settings = scheduler.get("settings") if isinstance(scheduler, dict) else None
    fifo = settings.get("fifo") if isinstance(settings, dict) else None
    priority = fifo.get("priority") if isinstance(fifo, dict) else None
    return dict(priority) if isinstance(priority, dict) else {}


def _matrix(data: Mapping[str, Any], models: Mapping[str, Any]) -> list[str]:
    matrix = data.get("matrix")
    if matrix is None:
        return []
    if data.get("groups"):
        return ["groups and matrix: llama-swap accepts one or the other"]
    if not isinstance(matrix, dict) or not matrix.get("sets"):
        return ["matrix: at least one set is needed"]
    variables = matrix.get("vars") or {}
    problems = []
    for key, model in variables.items():
        if not _VAR_KEY.match(str(key)):
            problems.append(f"matrix.vars.{key}: 1-32 letters, digits, '-' or '.'")
        elif model not in models:
            problems.append(f"matrix.vars.{key}: {model!r} is not a model")
    known = {str(k) for k in variables} | {str(m) for m in models}
    for key, cost in (matrix.get("evict_costs") or {}).items():
        if not isinstance(cost, int) or cost <= 0:
            problems.append(f"matrix.evict_costs.{key}: a positive whole number")
        elif key not in known:
            problems.append(f"matrix.evict_costs.{key}: no such var or model")
    sets = matrix["sets"] if isinstance(matrix["sets"], dict) else {}
    for name, dsl in sets.items():
        for part in _DSL_TOKEN.findall(str(dsl)):
            if part.isspace() or part in "&|()" or part.startswith("+"):
                continue
            if not re.fullmatch(r"[\w.-]+", part):
                problems.append(f"matrix.sets.{name}: unexpected character {part!r}")
            elif part not in known:
                problems.append(f"matrix.sets.{name}: {part!r} is not a var or model")
    return problems


def _groups(data: Mapping[str, Any]) -> list[str]:
    problems = []
    seen: dict[str, str] = {}
    groups = data.get("groups") or {}
    for group_id, group in groups.items() if isinstance(groups, dict) else ():
        members = group.get("members") or [] if isinstance(group, dict) else []
        for member in members:
            if member in seen:
                again = "twice" if seen[member] == group_id else f"in {seen[member]} too"
                problems.append(f"groups.{group_id}: {member} is a member {again}")
            seen[member] = group_id
    return problems


def _profiles(data: Mapping[str, Any], names: set[str]) -> list[str]:
    profiles = data.get("profiles")
    if not isinstance(profiles, dict):
        return []
    selectors = data.get("selectors") or {}
    problems = []
    for name, profile in profiles.items():
        if not isinstance(profile, dict):
            problems.append(
                f"profiles.{name}: a mapping with description and pins (llama-swap no longer "
                "accepts the list form)"
            )
            continue
        pins = profile.get("pins") or {}
        if not pins:
            problems.append(f"profiles.{name}.pins: at least one pin")
        for pin, target in pins.items() if isinstance(pins, dict) else ():
            known = target in names or target in selectors or "/" in str(target)
            if target not in ("", None) and not known:
                problems.append(f"profiles.{name}.pins.{pin}: {target!r} is not a model")
    return problems


def _selectors(
    data: Mapping[str, Any], models: Mapping[str, Any], aliases: Mapping[str, str]
) -> list[str]:
    selectors = data.get("selectors")
    if not isinstance(selectors, dict):
        return []
    problems = []
    for name, selector in selectors.items():
        where = f"selectors.{name}"
        if name in models or name in aliases:
            problems.append(f"{where}: the name of a model")
        strategy = selector.get("strategy") if isinstance(selector, dict) else None
        if strategy not in _STRATEGIES:
            problems.append(f"{where}.strategy: {strategy!r} is not warm, pin or spillover")
        if isinstance(selector, dict) and not selector.get("targets"):
            problems.append(f"{where}.targets: at least one")
        elif strategy == "spillover":
            local = [aliases.get(t, t) for t in selector["targets"] if aliases.get(t, t) in models]
            problems += _spillover(data, where, local)
    return problems


def _spillover(data: Mapping[str, Any], where: str, targets: list[str]) -> list[str]:
    """Spillover targets must be able to run together (internal/config/selectors.go)."""
    if len(targets) <= 1:
        return []
    matrix = data.get("matrix")
    if matrix is not None:
        sets = matrix.get("sets") if isinstance(matrix, dict) else None
        variables = matrix.get("vars") or {} if isinstance(matrix, dict) else {}
        families = _expand_sets(sets if isinstance(sets, dict) else {}, variables)
        if any(set(targets) <= members for family in families.values() for members in family):
            return []
        return [f"{where}.targets: not all together in one set of the matrix"]
    groups = data.get("groups") or {}
    group_of = {
        str(m): str(gid)
        for gid, g in groups.items()
        for m in (g.get("members") or [] if isinstance(g, dict) else [])
    }
    first = group_of.get(targets[0])
    if first is None:
        return [f"{where}: target {targets[0]!r} is not in a group"]
    if groups[first].get("swap", True):
        return [f"{where}: spillover targets must share a group with swap: false"]
    if any(group_of.get(t) != first for t in targets[1:]):
        return [f"{where}: spillover targets must share one group"]
    return []


def _expand_sets(
    sets: Mapping[str, Any], variables: Mapping[str, Any]
) -> dict[str, list[set[str]]]:
    """Each matrix set as the model sets it allows (& unites, | chooses, +name refers)."""
    done: dict[str, list[set[str]]] = {}

    def family(name: str, seen: tuple[str, ...]) -> list[set[str]]:
        if name in done:
            return done[name]
        if name in seen or name not in sets:
            return []
        parts = [p for p in _DSL_TOKEN.findall(str(sets[name])) if not p.isspace()]
        result, _ = _or(parts, 0, lambda ref: family(ref, (*seen, name)))
        done[name] = result
        return result

    def _or(parts: list[str], at: int, ref: Any) -> tuple[list[set[str]], int]:
        result, at = _and(parts, at, ref)
        while at < len(parts) and parts[at] == "|":
            more, at = _and(parts, at + 1, ref)
            result = result + more
        return result, at

    def _and(parts: list[str], at: int, ref: Any) -> tuple[list[set[str]], int]:
        result, at = _leaf(parts, at, ref)
        while at < len(parts) and parts[at] == "&":
            more, at = _leaf(parts, at + 1, ref)
            result = [a | b for a in result for b in more][:4096]
        return result, at

    def _leaf(parts: list[str], at: int, ref: Any) -> tuple[list[set[str]], int]:
        if at >= len(parts):
            return [set()], at
        part = parts[at]
        if part == "(":
            inner, at = _or(parts, at + 1, ref)
            return inner, at + 1
        if part.startswith("+"):
            return ref(part[1:]), at + 1
        return [{str(variables.get(part, part))}], at + 1

    for name in sets:
        family(str(name), ())
    return done
