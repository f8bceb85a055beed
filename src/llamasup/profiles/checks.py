"""Checks across a whole profile set, once every model and agent is built: aliases, agent
names, pinned models the limits cannot all hold, the listen address."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from llamasup.core.units import format_bytes
from llamasup.core.yamlsrc import KeyPath
from llamasup.profiles.parsed import At, IssueLog, ParsedFile, error_at
from llamasup.profiles.types import AgentConfig, ModelConfig, ServerConfig

#: where each name of one section was defined, and its raw value
Entries = Mapping[str, tuple[At, Any]]

_SPAWN_PLACEHOLDER_RE = re.compile(r"\$\{(PORT|HOST|MODEL_ID)\}")


def check_aliases(models: Mapping[str, ModelConfig], entries: Entries, log: IssueLog) -> None:
    """An alias must name one model, and no model's id."""
    owners: dict[str, str] = {}
    for model in models.values():
        at = entries[model.id][0]
        for i, alias in enumerate(model.aliases):
            if alias in models:
                error_at(log, at, f"alias {alias!r} is the id of another model", "aliases", i)
            elif alias in owners:
                error_at(
                    log,
                    at,
                    f"alias {alias!r} is also an alias of model {owners[alias]!r}",
                    "aliases",
                    i,
                )
            else:
                owners[alias] = model.id


def check_agent_names(
    models: Mapping[str, ModelConfig],
    agents: Mapping[str, AgentConfig],
    entries: Entries,
    log: IssueLog,
) -> None:
    """An agent named like a model or alias cannot be requested by its bare name."""
    names = {alias: model.id for model in models.values() for alias in model.aliases}
    names.update({model_id: model_id for model_id in models})
    for name, agent in agents.items():
        if name in names and agent.model:
            at = entries[name][0]
            log.warn(
                at.file,
                at.path,
                f"agent {name!r} has the name of model {names[name]!r} (or its alias): as a "
                f"request's model, {name!r} means that model; request "
                f"{agent.model}@{name} or @{name} for the agent",
            )


def check_pinned(
    models: Mapping[str, ModelConfig], server: ServerConfig, entries: Entries, log: IssueLog
) -> None:
    """Pinned models that cannot all run: the planner starts them in id order and
    refuses the rest (nothing evicts a pinned one), so say which at validation."""
    pinned = [model for model in models.values() if model.pinned]  # already in id order
    budgets = dict(server.device_budgets)
    count, held = 0, 0
    held_on: dict[str, int] = {}
    for model in pinned:
        memory = model.memory or 0
        at = entries[model.id][0]
        over = [
            (device, size)
            for device, size in model.memory_devices
            if device in budgets and held_on.get(device, 0) + size > budgets[device]
        ]
        if server.max_sidecars is not None and count + 1 > server.max_sidecars:
            why = f"max_sidecars is {server.max_sidecars} and {count} pinned models come first"
        elif server.memory_budget is not None and held + memory > server.memory_budget:
            why = (
                f"it declares {format_bytes(memory)} and pinned models before it "
                f"{format_bytes(held)}, over memory_budget {format_bytes(server.memory_budget)}"
            )
        elif over:
            device, size = over[0]
            why = (
                f"it declares {format_bytes(size)} on {device} and pinned models before it "
                f"{format_bytes(held_on.get(device, 0))}, over memory_budget.{device} "
                f"{format_bytes(budgets[device])}"
            )
        else:  # admitted, as the planner would (pinned ones start in id order)
            count, held = count + 1, held + memory
            for device, size in model.memory_devices:
                held_on[device] = held_on.get(device, 0) + size
            continue
        log.warn(at.file, (*at.path, "pinned"), f"{model.id!r} will be refused: {why}")


def check_listen(server: ServerConfig, entries: Entries, log: IssueLog) -> None:
    """An exposed front needs keys; the front's port is not a sidecar's."""
    listen_at = entries.get("listen", (None, None))[0]
    if not server.listen_is_loopback and not server.api_keys and not server.allow_public_listen:
        where = listen_at or next(iter(entries.values()))[0]
        error_at(
            log,
            where,
            f"listening on non-loopback {server.listen_host} with no api_keys: add an "
            "api_keys entry, or set allow_public_listen: true if the network is trusted",
        )
    hosts_at = entries.get("allowed_hosts", (None, None))[0]
    if server.allowed_hosts and not server.api_keys and not server.allow_public_listen:
        assert hosts_at is not None
        error_at(
            log,
            hosts_at,
            "allowed_hosts lets a reverse proxy expose llamasup beyond this machine: add an "
            "api_keys entry, or set allow_public_listen: true if its network is trusted",
        )
    low, high = server.ports
    if low <= server.listen_port <= high and listen_at is not None:
        error_at(
            log,
            listen_at,
            f"listen port {server.listen_port} lies inside the sidecar port range {low}-{high}",
        )


def check_spawn_placeholders(files: Sequence[ParsedFile], log: IssueLog) -> None:
    """${PORT}/${HOST}/${MODEL_ID} mean something only inside a model's command."""

    def walk(value: Any, path: KeyPath, parsed: ParsedFile) -> None:
        if len(path) == 3 and path[0] == "models" and path[2] == "command":
            return
        if isinstance(value, dict):
            for key, child in value.items():
                walk(child, (*path, key), parsed)
        elif isinstance(value, list):
            for i, child in enumerate(value):
                walk(child, (*path, i), parsed)
        elif isinstance(value, str) and (match := _SPAWN_PLACEHOLDER_RE.search(value)):
            log.error(parsed, path, f"{match.group()} is only substituted inside a model's command")

    for parsed in files:
        walk(parsed.data, (), parsed)
