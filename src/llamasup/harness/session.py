"""Sessions: how a bench or an eval gets a ready sidecar for each variant, and the facts
about it (its key, model file, llama-server build, pid, load time, memory estimate).

:class:`LocalSession` runs a supervisor of its own, like :func:`llamasup.library.local_models`
(it *is* one): the profiles' models with each variant as an extra agent, so the planner, the
limits and the sidecar code are the ones production traffic goes through.
:mod:`llamasup.harness.remote` talks to a running llamasup instead.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llamasup.errors import LlamasupError
from llamasup.flags.flagset import FlagSet, merge
from llamasup.harness.identity import model_identity, server_version
from llamasup.harness.targets import Variant, check_flags
from llamasup.library import LocalModels, local_models
from llamasup.memory.cache import estimate_spec
from llamasup.profiles.types import AgentConfig, Profiles, Source
from llamasup.spec.resolve import SidecarSpec, resolve, split_target

#: variants become agents of these names in the session's own profile set
VARIANT_AGENT_PREFIX = "llamasup-variant-"


@dataclass(frozen=True)
class Endpoint:
    """Where a variant's requests go: a base URL, headers, and fields for every body (the
    model name and, talking to a sidecar directly, its agent's request defaults)."""

    url: str
    headers: Mapping[str, str]
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class Described:
    """What a variant is before it runs: the sidecar key and what the results are keyed by."""

    key: str
    model_path: str | None
    binary_version: str | None


@dataclass(frozen=True)
class Process:
    """A variant's running sidecar as its supervisor sees it."""

    pid: int | None
    #: spawn to ready, seconds; None when this session did not start it (it was running)
    load_seconds: float | None
    #: the planner's estimate of its memory, bytes (or the profile's ``memory``)
    memory_estimate: int | None


class Session(abc.ABC):
    """Ready sidecars for variants, one block at a time (``async with session.use(v)``)."""

    @abc.abstractmethod
    def describe(self, variant: Variant) -> Described:
        """The variant's key, model file and build, without starting anything."""

    @abc.abstractmethod
    def use(self, variant: Variant) -> contextlib.AbstractAsyncContextManager[Endpoint]:
        """The variant's sidecar, ready (started if needed) for the block."""

    @abc.abstractmethod
    async def process(self, variant: Variant) -> Process | None:
        """The variant's process, while it runs."""

    @abc.abstractmethod
    async def release(self, variant: Variant) -> None:
        """Stop the variant's sidecar if this session started it (one variant at a time)."""


def variant_identity(session: Session, variant: Variant) -> dict[str, Any]:
    """What results of ``variant`` are keyed by: llama-server build, model file content (not
    its name or place: a moved model keeps its results), target and flags."""
    described = session.describe(variant)
    model = model_identity(described.model_path)
    return {
        "binary": described.binary_version,
        "model": {"size": model.get("size"), "fingerprint": model.get("fingerprint")},
        "target": variant.target,
        "flags": list(variant.flags),
    }


def bench_profiles(
    profiles: Profiles, variants: Sequence[Variant]
) -> tuple[Profiles, dict[Variant, str]]:
    """``profiles`` with one agent per variant, and the ``model@agent`` each variant is.

    A variant's agent holds its target agent's flags with the variant's laid over them. No
    model is pinned or preloaded here: only the variants under measurement run.

    Raises:
        UnknownModelError, UnknownAgentError: a target the profiles do not define.
        VariantError: a variant's flags do not parse.
    """
    agents: dict[str, AgentConfig] = dict(profiles.agents)
    names: dict[Variant, str] = {}
    source = Source("llamasup variants", None)
    for number, variant in enumerate(variants):
        resolved = resolve(profiles, *split_target(variant.target))
        base = resolved.agent
        flags: FlagSet = merge(
            base.flags if base is not None else FlagSet(),
            check_flags(variant.flags, variant.name),
        )
        name = f"{VARIANT_AGENT_PREFIX}{number}"
        agents[name] = AgentConfig(
            name,
            source,
            flags,
            model=resolved.model.id,
            description=variant.name,
            priority=None if base is None else base.priority,
        )
        names[variant] = f"{resolved.model.id}@{name}"
    models = {
        mid: dataclasses.replace(model, pinned=False, preload=False)
        for mid, model in profiles.models.items()
    }
    return dataclasses.replace(profiles, models=models, agents=agents), names


class LocalSession(Session):
    """Variants on a supervisor of this process's own (see :func:`open_local`)."""

    def __init__(self, models: LocalModels, names: Mapping[Variant, str]) -> None:
        self._models = models
        self._names = names

    def _spec(self, variant: Variant) -> SidecarSpec:
        return self._models.resolve(self._names[variant]).spec

    def describe(self, variant: Variant) -> Described:
        spec = self._spec(variant)
        version = server_version(spec.binary) if spec.kind == "llama-server" else None
        return Described(spec.key, spec.model_path, version)

    @contextlib.asynccontextmanager
    async def use(self, variant: Variant) -> AsyncIterator[Endpoint]:
        async with self._models.lease(self._names[variant]) as sidecar:
            yield Endpoint(
                sidecar.url, dict(sidecar.headers), {**sidecar.defaults, "model": sidecar.model}
            )

    async def process(self, variant: Variant) -> Process | None:
        key = self._spec(variant).key
        row = next((r for r in self._models.status() if r.key == key and r.running), None)
        if row is None:
            return None
        load = None
        if row.started_at is not None and row.ready_at is not None:
            load = max(0.0, row.ready_at - row.started_at)
        memory = row.memory
        if memory is None:  # the planner's estimate is computed off the loop: not there yet
            memory = await asyncio.to_thread(_estimate, self._spec(variant))
        return Process(row.pid, load, memory)

    async def release(self, variant: Variant) -> None:
        await self._models.unload(self._names[variant])


def _estimate(spec: SidecarSpec) -> int | None:
    try:
        estimate = estimate_spec(spec)
    except (LlamasupError, OSError, ValueError):
        return None  # not a GGUF llamasup can read: no estimate, as for the planner
    return None if estimate is None else estimate.total


@contextlib.asynccontextmanager
async def open_local(
    profiles: Profiles, variants: Sequence[Variant], *, environ: Mapping[str, str] | None = None
) -> AsyncIterator[LocalSession]:
    """A :class:`LocalSession` for ``variants``; every sidecar stops when the block ends."""
    derived, names = bench_profiles(profiles, variants)
    async with local_models(derived, environ=environ) as models:
        yield LocalSession(models, names)
