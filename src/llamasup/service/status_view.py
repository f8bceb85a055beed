"""The JSON documents of ``GET /api/status``, ``GET /api/plan`` and ``GET /sidecars``.

The shapes are documented in ``docs/control-api.md``; keep both in step.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamasup._version import __version__
from llamasup.planner.plan import Plan
from llamasup.reconcile.history import action_dict
from llamasup.sidecars.types import SidecarState

if TYPE_CHECKING:
    from llamasup.profiles.types import Profiles
    from llamasup.service.app import Service
    from llamasup.sidecars.supervisor import SupervisedStatus
    from llamasup.spec.resolve import SidecarSpec


def _argv(spec: SidecarSpec | None) -> list[str] | None:
    if spec is None:
        return None
    return [spec.binary or "llama-server", *spec.args]


def plan_dict(plan: Plan, models: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The plan's actions (each with the ``model`` of its key when ``models`` knows it)."""
    actions = []
    for action in plan.actions:
        row = action_dict(action)
        if models is not None:
            row["model"] = models.get(action.key)
        actions.append(row)
    return {"actions": actions, "summary": plan.summary()}


def key_models(service: Service, *profile_sets: Profiles) -> dict[str, str]:
    """Sidecar key -> model id for every key a plan may name: the profile sidecars of
    ``profile_sets`` (default: the current profiles), agent sidecars, running and stopped ones.
    A plan action carries only its key; a reader needs the model to make sense of it."""
    reconciler = service.reconciler
    models: dict[str, str] = {}
    for profiles in profile_sets or (service.profiles,):
        for model_id, key in reconciler.desired_keys(profiles).items():
            models[key] = model_id
    for key in reconciler.waiting_keys():
        spec = reconciler.spec_for(key)
        if spec is not None:
            models.setdefault(key, spec.model)
    for tomb in reconciler.tombstones():
        models[tomb.key] = tomb.model
    for status in service.supervisor.statuses():
        models[status.key] = status.sidecar.model
    return models


def sidecar_dict(service: Service, status: SupervisedStatus, now: float) -> dict[str, Any]:
    reconciler = service.reconciler
    sidecar = status.sidecar
    spec = reconciler.spec_for(status.key)
    return {
        "key": status.key,
        "model": sidecar.model,
        "agents": reconciler.agents(status.key),
        "state": "draining"
        if sidecar.state is SidecarState.READY and reconciler.draining(status.key)
        else str(sidecar.state),
        "pid": sidecar.pid,
        "port": sidecar.port,
        "started_at": sidecar.started_at,
        "ready_at": sidecar.ready_at,
        # time ready so far: none for a process that is not up (failed, stopping, starting)
        "uptime": None
        if sidecar.ready_at is None or sidecar.pid is None
        else round(now - sidecar.ready_at, 3),
        "restarts": sidecar.restarts,
        "failures": status.failures,
        "gave_up": status.gave_up,
        "retry_in": status.retry_in,
        "last_used": reconciler.last_used(status.key),
        "in_flight": reconciler.in_flight(status.key),
        "waiting": reconciler.demands.waiting_count(status.key),
        "memory": None if spec is None else reconciler.memory_estimate(spec),
        "pinned": spec is not None and spec.pinned,
        "last_error": sidecar.last_error,
        "exit_code": sidecar.exit_code,
        "argv": _argv(spec),
    }


def sidecars(service: Service) -> list[dict[str, Any]]:
    now = time.time()
    rows = [sidecar_dict(service, s, now) for s in service.supervisor.statuses()]
    known = {row["key"] for row in rows}
    for tomb in service.reconciler.tombstones():
        if tomb.key not in known:
            rows.append(_idle_row(service, tomb.key, tomb.model, "stopped"))
            known.add(tomb.key)
    for key in service.reconciler.waiting_keys():
        if key not in known:
            spec = service.reconciler.spec_for(key)
            rows.append(_idle_row(service, key, "" if spec is None else spec.model, "waiting"))
            known.add(key)
    last = service.reconciler.status.last
    for refusal in last.plan.refusals if last is not None else ():
        # a pinned model the limits cannot hold: the planner refuses it on every pass
        spec = service.reconciler.spec_for(refusal.key)
        if refusal.key not in known and spec is not None:
            row = _idle_row(service, refusal.key, spec.model, "refused")
            row["last_error"] = refusal.reason
            rows.append(row)
    rows.sort(key=lambda row: (row["model"], row["key"]))
    return rows


def _idle_row(service: Service, key: str, model: str, state: str) -> dict[str, Any]:
    reconciler = service.reconciler
    spec = reconciler.spec_for(key)
    return {
        "key": key,
        "model": model,
        "agents": reconciler.agents(key),
        "state": state,
        "pid": None,
        "port": None,
        "started_at": None,
        "ready_at": None,
        "uptime": None,
        "restarts": 0,
        "failures": 0,
        "gave_up": False,
        "retry_in": None,
        "last_used": reconciler.last_used(key),
        "in_flight": 0,
        "waiting": reconciler.demands.waiting_count(key),
        "memory": None if spec is None else reconciler.memory_estimate(spec),
        "pinned": spec is not None and spec.pinned,
        "last_error": None,
        "exit_code": None,
        "argv": _argv(spec),
    }


def status(service: Service) -> dict[str, Any]:
    profiles = service.profiles
    store = service.store
    server = profiles.server
    rows = sidecars(service)
    return {
        "version": __version__,
        "listen": service.listen_url,
        "profiles": {
            "source": str(store.path.absolute()),
            "revision": profiles.revision,
            "files": [str(Path(f).absolute()) for f in profiles.files],
            "loaded_at": store.loaded_at,
            "last_reload": store.last_reload.as_dict(),
            "warnings": [issue.as_dict() for issue in profiles.warnings],
            "auth_error": service.events.auth_error,
            "restart_needed": list(service.events.restart_needed),
        },
        "limits": {
            "max_sidecars": server.max_sidecars,
            "memory_budget": server.memory_budget,
            "running": sum(1 for row in rows if row["pid"] is not None),
            "memory_estimated": sum(row["memory"] or 0 for row in rows if row["pid"] is not None),
        },
        "reconciler": service.reconciler.status.as_dict(),
        "sidecars": rows,
    }
