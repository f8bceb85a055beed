"""``POST /api/apply``: a profile set in, a validated plan out (and, unless dry run, done).

The body is JSON ``{"files": {"NAME.yaml": "TEXT", ...}}`` (what ``llamasup apply`` sends),
or, when llamasup serves a single profile file, that file's YAML text itself. A dry run
validates and plans against the candidate without persisting or adopting anything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from llamasup.profiles.discover import profile_files
from llamasup.profiles.store import ApplyError, ProfileStore
from llamasup.profiles.types import ModelConfig, Profiles, Source
from llamasup.service.host import ControlHost
from llamasup.service.status_view import key_models, plan_dict

_NO_SOURCE = Source("", None)


def parse_files(body: bytes, content_type: str, store: ProfileStore) -> dict[str, str]:
    """The {file name: text} mapping an apply carries."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApplyError(f"the apply body is not UTF-8: {exc}") from exc
    if "json" in content_type.lower():
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
            raise ApplyError(f"the apply body is not JSON: {exc}") from exc
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            raise ApplyError('the apply body must be {"files": {"NAME.yaml": "TEXT", ...}}')
        return dict(files)
    if store.is_directory:
        raise ApplyError(
            f"{store.path} is a directory: send JSON {{'files': {{NAME: TEXT}}}} with every file"
        )
    return {store.path.name: text}


async def current_files(store: ProfileStore) -> dict[str, Any]:
    """``GET /api/profiles``: the served files as they are on disk now, by the names an apply
    takes (what the dashboard's editor starts from). A file that cannot be read is left out
    and named in ``unreadable``."""

    def read() -> dict[str, Any]:
        files: dict[str, str] = {}
        unreadable: dict[str, str] = {}
        for path in profile_files(store.path):
            try:
                files[path.name] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                unreadable[path.name] = str(exc)
        return {
            "source": str(store.path.absolute()),
            "directory": store.is_directory,
            "revision": store.current.revision,
            "files": files,
            "unreadable": unreadable,
        }

    return await asyncio.to_thread(read)


def model_changes(reconciler_keys: dict[str, str], new_keys: dict[str, str],
                  old: Profiles, new: Profiles) -> dict[str, list[str]]:  # fmt: skip
    """Models added, removed, changed (their sidecar restarts), updated (settings only)."""
    added = sorted(set(new.models) - set(old.models))
    removed = sorted(set(old.models) - set(new.models))
    changed: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    for model_id in sorted(set(old.models) & set(new.models)):
        if reconciler_keys.get(model_id) != new_keys.get(model_id):
            changed.append(model_id)
        elif _settings(old.models[model_id]) != _settings(new.models[model_id]):
            updated.append(model_id)
        else:
            unchanged.append(model_id)
    return {
        "added": added,
        "removed": removed,
        "changed": changed,
        "updated": updated,
        "unchanged": unchanged,
    }


def _settings(model: ModelConfig) -> ModelConfig:
    return dataclasses.replace(model, source=_NO_SOURCE)


async def apply_request(
    host: ControlHost, files: dict[str, str], *, dry_run: bool
) -> dict[str, Any]:
    store = host.store
    reconciler = host.reconciler
    old = store.current
    candidate = store.candidate(files)
    old_keys = reconciler.desired_keys(old)
    new_keys = reconciler.desired_keys(candidate)
    result: dict[str, Any] = {
        "dry_run": dry_run,
        "previous_revision": old.revision,
        "revision": candidate.revision,
        "changed": candidate.revision != old.revision,
        "models": model_changes(old_keys, new_keys, old, candidate),
        "warnings": [issue.as_dict() for issue in candidate.warnings],
        "restart_needed": host.restart_needed(candidate),
    }
    if dry_run:
        result["result"] = "dry-run"
        plan = reconciler.preview(candidate)
        result["plan"] = plan_dict(plan, key_models(host, old, candidate))
        return result
    _adopted, reload = await store.apply(files)
    result["result"] = reload.result
    plan = await reconciler.reconcile_once()
    result["plan"] = plan_dict(plan, key_models(host, old, candidate))
    return result
