"""llama-swap's request filters → forced and stripped request parameters.

llama-swap edits every request body for a model (``internal/server/filters.go``): it removes
the ``stripParams`` keys, sets the ``setParams`` values over the client's, then the
``setParamsByID`` values of the name the client asked for. A profile says the same with
``request: {strip, force}``: the model's carries ``stripParams`` and ``setParams``; each other
``setParamsByID`` key becomes an agent on the model whose ``request.force`` holds its values,
so clients keep requesting the key and the variants share one loaded sidecar as they did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llamasup.migrate.draft import Draft, Entry, sanitize_id, valid_id
from llamasup.migrate.llama_swap.model import ModelImport, put

#: llama-swap never lets a filter touch the model name
PROTECTED = frozenset({"model"})
Warn = Callable[[str, str], None]


def set_or_drop(entry: Entry, key: str, values: list[str]) -> None:
    if values:
        put(entry, key, values)
    else:
        entry.fields.pop(key, None)


def apply_filters(draft: Draft, imp: ModelImport, filters: Any) -> None:
    where = f"models.{imp.orig}.filters"
    if not isinstance(filters, dict):
        return

    def warn(path: str, message: str) -> None:
        draft.warn(path, message, section="models", name=imp.id)

    raw_strip = filters.get("stripParams") or filters.get("strip_params") or ""
    strip_key = "stripParams" if filters.get("stripParams") else "strip_params"
    strip = _keys(str(raw_strip).split(","), f"{where}.{strip_key}", warn)
    force = _params(filters.get("setParams") or {}, f"{where}.setParams", warn)
    by_id = dict(filters.get("setParamsByID") or {})
    own = by_id.pop(imp.orig, None)
    if own:
        force.update(_params(own, f"{where}.setParamsByID.{imp.orig}", warn))
        if imp.aliases:
            warn(
                f"{where}.setParamsByID.{imp.orig}",
                "now forced for requests by alias too (llama-swap set them only for requests "
                "naming the model id)",
            )
    rules: dict[str, Any] = {}
    if force:
        rules["force"] = force
    if strip:
        rules["strip"] = strip
    if rules:
        put(imp.entry, "request", rules)
    for key, params in by_id.items():
        if imp.entry.disabled:
            warn(f"{where}.setParamsByID.{key}", "not imported: its model is not imported")
            continue
        _agent(draft, imp, str(key), params if isinstance(params, dict) else {}, where)


def _keys(raw: list[str], path: str, warn: Warn) -> list[str]:
    keys: list[str] = []
    for item in raw:
        key = item.strip()
        if not key or key in PROTECTED or key in keys:
            continue
        if _is_path(key):
            warn(path, f"{key}: not imported; llamasup strips top-level keys, not JSON paths")
            continue
        keys.append(key)
    return sorted(keys)


def _params(raw: Any, path: str, warn: Warn) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in (raw if isinstance(raw, dict) else {}).items():
        name = str(key)
        if name in PROTECTED:
            continue
        if _is_path(name):
            warn(
                f"{path}.{name}",
                "not imported: llamasup forces top-level keys, not JSON paths inside them",
            )
            continue
        params[name] = value
    return params


def _is_path(key: str) -> bool:
    """llama-swap's keys are JSON paths (sjson): a dot, ``*`` or ``?`` reaches inside."""
    return any(c in key for c in ".*?|#@\\")


def _agent(draft: Draft, imp: ModelImport, key: str, params: dict[str, Any], where: str) -> None:
    name = key if valid_id(key) and key not in draft.agents else sanitize_id(key, set(draft.agents))
    path = f"{where}.setParamsByID.{key}"

    def warn(at: str, message: str) -> None:
        draft.warn(at, message, section="agents", name=name)

    force = _params(params, path, warn)
    entry = draft.agents.setdefault(name, Entry())
    entry.fields = {"description": f"llama-swap setParamsByID {key!r} of {imp.orig}"}
    entry.fields["model"] = imp.id
    if force:
        entry.fields["request"] = {"force": force}
    aliases = [a for a in imp.entry.fields.get("aliases", []) if a != key]
    was_alias = len(aliases) != len(imp.entry.fields.get("aliases", []))
    if was_alias:
        set_or_drop(imp.entry, "aliases", aliases)
    if name == key and not _names_a_model(draft, key):
        entry.notes.append(
            f"clients keep requesting {key!r} (an agent name stands for the agent on its "
            f"model), or {imp.id}@{name}"
        )
        return
    warn(
        path,
        f"now agent {name!r}: clients request {imp.id}@{name} (or @{name}) instead of {key!r}",
    )


def _names_a_model(draft: Draft, name: str) -> bool:
    """Whether ``name`` is already a model id or alias of the draft (it then wins)."""
    return name in draft.models or any(
        name in entry.fields.get("aliases", []) for entry in draft.models.values()
    )
