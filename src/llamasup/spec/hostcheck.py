"""Whether this host can start a model's sidecar: its program is there, and its model file.

A profile that loads can still name a binary that is not installed (a typo in ``binary:``)
or a GGUF file that is not on this host. Loading does not look (profiles are often validated
away from the host: CI, a laptop); these checks do, for the two callers that are on the host:

* a running llamasup vets every reload and apply with :func:`startable_issues`, so a change
  never stops a working sidecar to replace it with one that cannot start;
* ``llamasup validate --check-host`` reports :func:`host_issues` for every model.

The answers are :class:`~llamasup.errors.ProfileIssue` located at the key to fix
(``server.binary``, ``models.ID.binary``, ``models.ID.path``, ``models.ID.command``). One cause
shared by several models (a typo in ``server.binary``) is one issue naming them all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from llamasup.errors import ProfileIssue, ResolveError, RuntimeNotFoundError
from llamasup.profiles.types import ModelConfig, Profiles
from llamasup.runtime.locate import executable_file, resolve_binary
from llamasup.spec.resolve import Resolver, SidecarSpec, missing_model_file


@dataclass(frozen=True)
class _Problem:
    key: tuple[str, ...]
    message: str


def host_issues(
    profiles: Profiles, environ: Mapping[str, str], models: Iterable[str] | None = None
) -> list[ProfileIssue]:
    """What keeps ``models`` (default: every model) of ``profiles`` from starting here.

    ``environ`` is the environment llamasup runs with (``PATH``, ``LLAMA_SERVER_BIN``)."""
    resolver = Resolver(profiles)
    needed_by: dict[_Problem, list[str]] = {}
    for model_id in sorted(profiles.models if models is None else models):
        model = profiles.models.get(model_id)
        if model is None:
            continue
        try:
            spec = resolver.resolve(model.id).spec
        except ResolveError:  # not a host matter; a request for it says why
            continue
        for problem in (_program(model, spec, environ), _model_file(spec)):
            if problem is not None:
                needed_by.setdefault(problem, []).append(model.id)
    return [_issue(profiles, problem, ids) for problem, ids in needed_by.items()]


def startable_issues(
    current: Profiles, candidate: Profiles, environ: Mapping[str, str]
) -> list[ProfileIssue]:
    """:func:`host_issues` of the models adopting ``candidate`` would start or replace: those
    whose sidecar key changes, and new ones that are pinned or preload (started at once)."""
    before, after = _keys(current), _keys(candidate)
    acting = [
        model_id
        for model_id, key in after.items()
        if (model_id in before and before[model_id] != key)
        or (
            model_id not in before
            and (candidate.models[model_id].pinned or candidate.models[model_id].preload)
        )
    ]
    return host_issues(candidate, environ, acting)


def _keys(profiles: Profiles) -> dict[str, str]:
    """Model id -> the key of its profile sidecar (no agent); models that do not resolve have
    none."""
    resolver = Resolver(profiles)
    keys: dict[str, str] = {}
    for model_id in profiles.models:
        try:
            keys[model_id] = resolver.resolve(model_id).spec.key
        except ResolveError:
            continue
    return keys


def _program(model: ModelConfig, spec: SidecarSpec, environ: Mapping[str, str]) -> _Problem | None:
    if spec.kind == "command":
        return _command_program(model, spec, environ)
    try:
        resolve_binary(spec.binary or None, environ)
    except RuntimeNotFoundError as exc:
        # the model's own binary, else the server's (also where to set one when none is
        # configured and this host has none to fall back to)
        key = ("models", model.id, "binary") if model.binary else ("server", "binary")
        return _Problem(key, str(exc))
    return None


def _command_program(
    model: ModelConfig, spec: SidecarSpec, environ: Mapping[str, str]
) -> _Problem | None:
    program = spec.binary
    key = ("models", model.id, "command")
    if os.sep in program or (os.altsep and os.altsep in program):
        if not os.path.exists(program):
            return _Problem(key, f"the command's program {program} does not exist")
        if not executable_file(Path(program)):
            return _Problem(key, f"the command's program {program} is not an executable file")
        return None
    # the child's PATH: the profile may set its own
    search = spec.env_map.get("PATH", environ.get("PATH", os.defpath))
    if shutil.which(program, path=search) is None:
        return _Problem(key, f"the command's program {program!r} is not on PATH ({search})")
    return None


def _model_file(spec: SidecarSpec) -> _Problem | None:
    missing = missing_model_file(spec)
    if missing is None:
        return None
    return _Problem(("models", spec.model, "path"), missing)


def _issue(profiles: Profiles, problem: _Problem, model_ids: list[str]) -> ProfileIssue:
    source = profiles.source_of(*problem.key)
    if source is None and problem.key[0] == "models":
        source = profiles.models[problem.key[1]].source
    file, line = (source.file, source.line) if source is not None else (profiles.source, None)
    path = ".".join(problem.key)
    who = ", ".join(model_ids)
    return ProfileIssue(file, line, path, f"{problem.message} (needed to start {who})")
