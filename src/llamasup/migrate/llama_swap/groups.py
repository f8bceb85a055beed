"""llama-swap's swap policy (groups, matrix) and startup preloading → groups, limits, preload.

llama-swap (``internal/config/config.go`` AddDefaultGroupToConfig, ``internal/router/group.go``):
every model is in a group; the models no group names form the implicit default group, with
``swap`` and ``exclusive`` on. Starting a model stops its group's other members when the
group swaps, and every model of the other groups when its group is exclusive, except members
of persistent groups. llamasup's groups say the same: ``max_running: 1`` for a swapping
group (else its member count), and ``exclusive``/``persistent`` as they are. Without any
declared group the default group holds every model, which is ``server.max_sidecars: 1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llamasup.migrate.draft import Draft, Entry, sanitize_id, valid_id
from llamasup.migrate.llama_swap.model import ModelImport, put

DEFAULT_GROUP = "swap-default"


def apply_groups(draft: Draft, imports: list[ModelImport], data: Mapping[str, Any]) -> None:
    groups = data.get("groups") or {}
    if not isinstance(groups, dict):
        raise ValueError("groups: a mapping of group id → settings")
    if data.get("matrix") is not None:
        where = "matrix" if "matrix" in data and "routing" not in data else "routing.router"
        draft.warn(
            where,
            "no equivalent: llamasup has no solver over allowed model sets, so models start "
            "side by side without unloading each other; limit what runs together with groups "
            "(max_running, exclusive), server.max_sidecars or server.memory_budget",
        )
        return
    live = [imp for imp in imports if not imp.entry.disabled]
    if not groups:
        draft.set_server(
            "max_sidecars",
            1,
            "llama-swap without groups runs one model at a time; raise this, or set "
            "memory_budget, to let models stay loaded side by side",
        )
        return
    by_orig = {imp.orig: imp for imp in imports}
    grouped: dict[str, str] = {}
    taken = {str(gid) for gid in groups if valid_id(str(gid))}
    for gid, raw in groups.items():
        if not isinstance(raw, dict):
            raise ValueError(f"groups.{gid}: a mapping with members")
        name = str(gid) if valid_id(str(gid)) else sanitize_id(str(gid), taken)
        taken.add(name)
        members = _members(draft, str(gid), raw.get("members") or [], by_orig, grouped)
        _group(draft, str(gid), name, raw, members)
    rest = [imp for imp in live if imp.orig not in grouped]
    if rest:
        name = sanitize_id(DEFAULT_GROUP, taken)
        draft.groups[name] = Entry(
            {
                "max_running": 1,
                "exclusive": True,
                "description": "models in no llama-swap group",
            },
            [
                "llama-swap's implicit default group: one member at a time, and a member "
                "starting stops every other group's models but persistent groups'"
            ],
        )
        for imp in rest:
            put(imp.entry, "group", name)


def _members(
    draft: Draft,
    gid: str,
    members: Any,
    by_orig: Mapping[str, ModelImport],
    grouped: dict[str, str],
) -> list[ModelImport]:
    found = []
    for i, item in enumerate(members if isinstance(members, list) else []):
        member = str(item)
        grouped[member] = gid
        imp = by_orig.get(member)
        if imp is None:
            draft.warn(f"groups.{gid}.members[{i}]", f"{member}: no such model; ignored")
        elif not imp.entry.disabled:
            found.append(imp)
    return found


def _group(
    draft: Draft, gid: str, name: str, raw: Mapping[str, Any], members: list[ModelImport]
) -> None:
    swap = bool(raw.get("swap", True))
    exclusive = bool(raw.get("exclusive", True))
    persistent = bool(raw.get("persistent", False))
    limit = 1 if swap else max(1, len(members))
    fields: dict[str, Any] = {"max_running": limit}
    if exclusive:
        fields["exclusive"] = True
    if persistent:
        fields["persistent"] = True
    fields["description"] = f"llama-swap group {gid}"
    entry = Entry(fields)
    entry.notes.append(
        "swap: one member at a time" if swap else "swap: false: its members may all run at once"
    )
    draft.groups[name] = entry
    for imp in members:
        put(imp.entry, "group", name)
    for key in raw:
        if key not in ("swap", "exclusive", "persistent", "members"):
            draft.warn(f"groups.{gid}.{key}", "unknown llama-swap group setting; not imported")


def apply_preload(draft: Draft, imports: list[ModelImport], data: Mapping[str, Any]) -> None:
    hooks = data.get("hooks") or {}
    startup = hooks.get("on_startup") or {} if isinstance(hooks, dict) else {}
    for key in hooks if isinstance(hooks, dict) else ():
        if key != "on_startup":
            draft.warn(f"hooks.{key}", "unknown llama-swap hook; not imported")
    for key in startup if isinstance(startup, dict) else ():
        if key != "preload":
            draft.warn(f"hooks.on_startup.{key}", "unknown llama-swap action; not imported")
    names = startup.get("preload") or [] if isinstance(startup, dict) else []
    lookup: dict[str, ModelImport] = {}
    for model in imports:
        lookup.update({alias: model for alias, _ in model.aliases})
        lookup[model.orig] = model
    loaded: list[ModelImport] = []
    for i, raw in enumerate(names):
        name = str(raw).strip()
        found = lookup.get(name)
        if not name:
            continue
        if found is None or found.entry.disabled:
            draft.warn(f"hooks.on_startup.preload[{i}]", f"{name}: no such model; ignored")
        elif not found.entry.fields.get("pinned"):
            put(found.entry, "preload", True)
            loaded.append(found)
    groups = [model.entry.fields.get("group") for model in loaded]
    one_at_a_time = {
        name for name, entry in draft.groups.items() if entry.fields.get("max_running") == 1
    }
    shared = {g for g in groups if g in one_at_a_time and groups.count(g) > 1}
    if groups.count(None) > 1 and draft.server.get("max_sidecars") == 1:
        shared.add(None)
    if shared:
        draft.warn(
            "hooks.on_startup.preload",
            "several preloaded models share a one-at-a-time limit: llama-swap kept the last "
            "one loaded; llamasup starts what the limit allows",
        )
