"""llama-swap's request filters → model args and agents.

``filters.setParams`` (applied to every request for the model) becomes request-time flags in
the model's args, which llama-server uses as its defaults; each ``filters.setParamsByID`` key
(a name clients request to get a variant of the model) becomes an agent on that model, so the
variants share one loaded sidecar as they did. Both now give defaults a client may override,
where llama-swap overwrote the client's value; ``stripParams`` has no equivalent.
"""

from __future__ import annotations

from typing import Any

from llamasup.migrate.draft import Draft, Entry, sanitize_id, valid_id
from llamasup.migrate.llama_swap.cmd import Segment, Word, expand_macros, flag_segments
from llamasup.migrate.llama_swap.model import ModelImport, put
from llamasup.migrate.params import request_flags


def set_or_drop(entry: Entry, key: str, values: list[str]) -> None:
    if values:
        put(entry, key, values)
    else:
        entry.fields.pop(key, None)


def apply_filters(draft: Draft, imp: ModelImport, filters: Any) -> None:
    where = f"models.{imp.orig}.filters"
    if not isinstance(filters, dict):
        return
    for key in ("stripParams", "strip_params"):
        if filters.get(key):
            draft.warn(
                f"{where}.{key}",
                "no equivalent: llamasup passes request parameters through; model args and "
                "agents set defaults that a client may still override",
                section="models",
                name=imp.id,
            )
    by_id = {
        expand_macros(str(key), imp.macros): _expand_values(value, imp.macros)
        for key, value in (filters.get("setParamsByID") or {}).items()
    }
    own = {**(filters.get("setParams") or {}), **(by_id.pop(imp.orig, None) or {})}
    if own:
        _model_params(draft, imp, own, where)
    for key, params in by_id.items():
        _agent(draft, imp, key, params if isinstance(params, dict) else {}, where)


def _model_params(draft: Draft, imp: ModelImport, params: dict[str, Any], where: str) -> None:
    flags = request_flags(params)
    for name, why in flags.skipped:
        draft.warn(
            f"{where}.setParams.{name}", f"not imported: {why}", section="models", name=imp.id
        )
    if imp.server is None or imp.entry.disabled:
        if flags.tokens:
            draft.warn(
                f"{where}.setParams",
                "no equivalent for a command upstream (no llama-server flags to carry it)",
                section="models",
                name=imp.id,
            )
        return
    if not flags.tokens:
        return
    kept = [s for s in imp.server.kept if s.setting is None or s.setting.name not in flags.names]
    words = [Word(token, token) for token in flags.tokens]
    imp.server.kept = kept + [Segment(seg) for seg in flag_segments(words)]
    put(imp.entry, "args", [t for s in imp.server.kept for t in s.raw])
    draft.warn(
        f"{where}.setParams",
        f"became llama-server defaults in args ({' '.join(flags.tokens)}): a value the client "
        "sends now wins, where llama-swap overwrote it",
        section="models",
        name=imp.id,
    )


def _agent(draft: Draft, imp: ModelImport, key: str, params: dict[str, Any], where: str) -> None:
    name = key if valid_id(key) and key not in draft.agents else sanitize_id(key, set(draft.agents))
    flags = request_flags(params)
    path = f"{where}.setParamsByID.{key}"
    for param, why in flags.skipped:
        draft.warn(f"{path}.{param}", f"not imported: {why}", section="agents", name=name)
    entry = draft.agents.setdefault(name, Entry())
    entry.fields = {"description": f"llama-swap setParamsByID {key!r} of {imp.orig}"}
    entry.fields["model"] = imp.id
    if flags.tokens:
        entry.fields["flags"] = flags.tokens
    aliases = [a for a in imp.entry.fields.get("aliases", []) if a != key]
    was_alias = len(aliases) != len(imp.entry.fields.get("aliases", []))
    if was_alias:
        set_or_drop(imp.entry, "aliases", aliases)
    draft.warn(
        path,
        (
            f"now agent {name!r}: clients may keep requesting {key!r} (an agent name stands "
            f"for the agent on its model), or {imp.id}@{name}; its flags are defaults a "
            "client may override"
            if name == key and not _names_a_model(draft, key)
            else f"now agent {name!r}: clients request {imp.id}@{name} (or @{name}) instead of "
            f"{key!r}; its flags are defaults a client may override"
        )
        + ("; no longer an alias, which would drop the parameters silently" if was_alias else ""),
        section="agents",
        name=name,
    )


def _names_a_model(draft: Draft, name: str) -> bool:
    """Whether ``name`` is already a model id or alias of the draft (it then wins)."""
    return name in draft.models or any(
        name in entry.fields.get("aliases", []) for entry in draft.models.values()
    )


def _expand_values(value: Any, macros: list[tuple[str, Any]]) -> Any:
    if isinstance(value, str):
        for name, macro in reversed(macros):
            if value == f"${{{name}}}":
                return macro
        return expand_macros(value, macros)
    if isinstance(value, dict):
        return {k: _expand_values(v, macros) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_values(v, macros) for v in value]
    return value
