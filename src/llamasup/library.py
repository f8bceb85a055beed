"""Sidecars for the life of one program: ``async with local_models(PATH) as models``.

For a program that wants llama-server only while it runs (a CLI's tool-call loop, a notebook,
a batch job): no daemon and no HTTP front. A model starts on first use, stays warm across
calls, shares one start between concurrent callers, and is stopped when the block ends; on
Linux it also dies with the program if that is killed (``PR_SET_PDEATHSIG``). The same
profiles, planner, limits and eviction as ``llamasup serve``::

    async with local_models("profiles/") as models:
        async with models.lease("gemma3-270m@precise") as sidecar:
            reply = httpx.post(f"{sidecar.url}/v1/chat/completions", headers=sidecar.headers,
                               json={**sidecar.defaults, "messages": [...]})

``lease`` counts the block as a request in flight (nothing evicts the sidecar under it);
``request_defaults`` gives an agent's sampling defaults to merge into request bodies (the
front does that merge for HTTP clients; here the program talks to llama-server directly).
Each sidecar start requires a key of its own (so that its loopback port serves only this
program); ``sidecar.headers`` carries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamasup.profiles.load import load_profiles
from llamasup.profiles.types import Profiles
from llamasup.reconcile.pool import Origin
from llamasup.reconcile.reconciler import Reconciler
from llamasup.sidecars.supervisor import Supervisor
from llamasup.spec.resolve import Resolved, split_target


@dataclass(frozen=True)
class LocalSidecar:
    """A ready sidecar leased by the program."""

    key: str
    url: str
    #: the model name llama-server answers to (send it as the body's ``model``)
    model: str
    #: the agent's request-time defaults (``temperature``, ``top_k``, ...) for request bodies
    defaults: Mapping[str, Any]
    #: send these with every request (the key of the sidecar's current start)
    headers: Mapping[str, str]


class LocalModels:
    def __init__(self, reconciler: Reconciler, start_timeout: float) -> None:
        self._reconciler = reconciler
        self._start_timeout = start_timeout

    @property
    def profiles(self) -> Profiles:
        return self._reconciler.profiles

    def resolve(self, target: str) -> Resolved:
        """``model``, ``alias`` or ``model@agent`` → spec and request defaults (raises
        UnknownModelError / UnknownAgentError)."""
        model, agent = split_target(target)
        return self._reconciler.resolver.resolve(model, agent)

    def request_defaults(self, target: str) -> Mapping[str, Any]:
        return self.resolve(target).request_defaults

    @contextlib.asynccontextmanager
    async def lease(
        self, target: str, *, start_within: float | None = None
    ) -> AsyncIterator[LocalSidecar]:
        """A ready sidecar for ``target`` (started if needed), held in flight for the block.

        Waits at most ``start_within`` seconds (default ``server.start_timeout``) for it.
        """
        resolved = self.resolve(target)
        agent = resolved.agent.name if resolved.agent is not None else None
        origin = Origin(resolved.model.id, agent)
        wait = self._start_timeout if start_within is None else start_within
        async with self._reconciler.lease(resolved.spec, timeout=wait, origin=origin) as up:
            yield LocalSidecar(
                up.key,
                f"http://{up.host}:{up.port}",
                resolved.upstream_model,
                dict(resolved.request_defaults),
                {name.decode(): value.decode() for name, value in up.headers},
            )

    async def unload(self, target: str) -> bool:
        """Stop ``target``'s sidecar now (it starts again on the next lease)."""
        return await self._reconciler.unload(self.resolve(target).spec.key)


@contextlib.asynccontextmanager
async def local_models(
    profiles: Path | str | Profiles,
    *,
    environ: Mapping[str, str] | None = None,
    shutdown_timeout: float = 30.0,
) -> AsyncIterator[LocalModels]:
    """Run the profile set's sidecars for the duration of the block, then stop them all."""
    if not isinstance(profiles, Profiles):
        profiles = load_profiles(Path(profiles), os.environ if environ is None else environ)
    server = profiles.server
    supervisor = Supervisor.for_server(server)
    reconciler = Reconciler(profiles, supervisor)
    loop = asyncio.create_task(reconciler.run(), name="llamasup-reconciler")
    reconciler.trigger()  # pinned and preload models start now
    try:
        yield LocalModels(reconciler, server.start_timeout)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await supervisor.stop_all(shutdown_timeout)
