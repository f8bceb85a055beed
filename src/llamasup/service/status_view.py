"""The JSON documents of ``GET /api/status``, ``GET /api/plan`` and ``GET /sidecars``.

Built from the reconciler's snapshot; the shapes are documented in ``docs/control-api.md``,
keep both in step.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llamasup._version import __version__
from llamasup.planner.types import Plan
from llamasup.profiles.types import Profiles
from llamasup.reconcile.history import action_dict
from llamasup.reconcile.snapshot import SidecarView, device_split
from llamasup.service.host import ControlHost


def plan_dict(plan: Plan, models: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The plan's actions (each with the ``model`` of its key when ``models`` knows it)."""
    actions = []
    for action in plan.actions:
        row = action_dict(action)
        if models is not None:
            row["model"] = models.get(action.key)
        actions.append(row)
    return {"actions": actions, "summary": plan.summary()}


def key_models(host: ControlHost, *profile_sets: Profiles) -> dict[str, str]:
    """Sidecar key -> model id for every key a plan may name: the profile sidecars of
    ``profile_sets`` (default: the current profiles), agent sidecars, running and stopped ones.
    A plan action carries only its key; a reader needs the model to make sense of it."""
    reconciler = host.reconciler
    models: dict[str, str] = {}
    for profiles in profile_sets or (host.profiles,):
        for model_id, key in reconciler.desired_keys(profiles).items():
            models[key] = model_id
    for view in reconciler.snapshot():
        if view.model:
            models[view.key] = view.model
    return models


def sidecar_dict(view: SidecarView, now: float) -> dict[str, Any]:
    return {
        "key": view.key,
        "model": view.model,
        "agents": list(view.agents),
        "state": view.state,
        "pid": view.pid,
        "port": view.port,
        "started_at": view.started_at,
        "ready_at": view.ready_at,
        # time ready so far: none for a process that is not up (failed, stopping, starting)
        "uptime": None
        if view.ready_at is None or view.pid is None
        else round(now - view.ready_at, 3),
        "restarts": view.restarts,
        "failures": view.failures,
        "gave_up": view.gave_up,
        "retry_in": view.retry_in,
        "last_used": view.last_used,
        "in_flight": view.in_flight,
        "waiting": view.waiting,
        "oldest_wait": view.oldest_wait,
        "drain": view.drain,
        "progress": view.progress,
        "memory": view.memory,
        "memory_devices": None if view.memory_devices is None else dict(view.memory_devices),
        "memory_reported": None if view.memory_reported is None else dict(view.memory_reported),
        "pinned": view.pinned,
        "last_error": view.last_error,
        "exit_code": view.exit_code,
        "argv": None if view.argv is None else list(view.argv),
        "adopted_at": view.adopted_at,
        "adopted_from": view.adopted_from,
    }


def sidecars(host: ControlHost) -> list[dict[str, Any]]:
    now = time.time()
    return [sidecar_dict(view, now) for view in host.reconciler.snapshot()]


def status(host: ControlHost) -> dict[str, Any]:
    profiles = host.profiles
    store = host.store
    server = profiles.server
    views = host.reconciler.snapshot()
    now = time.time()
    running = [view for view in views if view.running]
    return {
        "version": __version__,
        "listen": host.listen_url,
        "process": host.process_status(),
        "profiles": {
            "source": str(store.path.absolute()),
            "revision": profiles.revision,
            "files": [str(Path(f).absolute()) for f in profiles.files],
            "loaded_at": store.loaded_at,
            "last_reload": store.last_reload.as_dict(),
            "watch": host.watcher.status.as_dict(),
            "warnings": [issue.as_dict() for issue in profiles.warnings],
            "auth_error": host.events.auth_error,
            "restart_needed": list(host.events.restart_needed),
        },
        "limits": {
            "max_sidecars": server.max_sidecars,
            "memory_budget": server.memory_budget,
            "running": len(running),
            "memory_estimated": sum(view.memory or 0 for view in running),
            "devices": _devices(server.device_budgets, running),
        },
        "reconciler": host.reconciler.status.as_dict(),
        "sidecars": [sidecar_dict(view, now) for view in views],
    }


def _devices(
    budgets: tuple[tuple[str, int], ...], running: list[SidecarView]
) -> dict[str, dict[str, int]]:
    """Each budgeted device: its budget and the estimates of running sidecars on it."""
    devices = {name: {"budget": budget, "estimated": 0} for name, budget in budgets}
    if devices:
        for view in running:
            for name, amount in device_split(view).items():
                if name in devices:
                    devices[name]["estimated"] += amount
    return devices
