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
from llamasup.reconcile.pool import Origin, Terms
from llamasup.reconcile.reconciler import Reconciler
from llamasup.reconcile.snapshot import SidecarView
from llamasup.sidecars.supervisor import Supervisor
from llamasup.spec.resolve import Resolved, split_target


@dataclass(frozen=True)
class LocalSidecar:
    """A ready sidecar leased by the program: where to send requests, and what with them.

    Attributes:
        key: the sidecar's identity (the hash of binary, model, load-time flags, environment).
        url: its loopback base URL, e.g. ``http://127.0.0.1:41234``.
        model: the model name llama-server answers to.
        defaults: the agent's request-time defaults, to merge into request bodies.
        headers: the authorization of the sidecar's current start, for every request.
    """

    key: str
    url: str
    #: the model name llama-server answers to (send it as the body's ``model``)
    model: str
    #: the agent's request-time defaults (``temperature``, ``top_k``, ...) for request bodies
    defaults: Mapping[str, Any]
    #: send these with every request (the key of the sidecar's current start)
    headers: Mapping[str, str]


class LocalModels:
    """The running profile set of a :func:`local_models` block: resolve, lease and unload.

    One reconciler, as in ``llamasup serve``, decides which sidecars run: a model starts on
    its first lease, stays warm for the next ones (until its ``ttl``, or until the limits
    make room for another), and concurrent first leases share one start. Made by
    :func:`local_models`, not by the program; valid only inside its ``async with`` block.
    """

    def __init__(self, reconciler: Reconciler, start_timeout: float) -> None:
        self._reconciler = reconciler
        self._start_timeout = start_timeout

    @property
    def profiles(self) -> Profiles:
        """The profile set being served (frozen)."""
        return self._reconciler.profiles

    def resolve(self, target: str) -> Resolved:
        """What a target runs, without starting anything.

        Args:
            target: ``model``, ``alias`` or ``model@agent``.

        Returns:
            The sidecar spec (command line, key) and the agent's request defaults.

        Raises:
            UnknownModelError: the profiles define no such model or alias.
            UnknownAgentError: the profiles define no such agent.
        """
        model, agent = split_target(target)
        return self._reconciler.resolver.resolve(model, agent)

    def request_defaults(self, target: str) -> Mapping[str, Any]:
        """The request-time defaults of a target's agent (``temperature``, ``top_k``, ...).

        Args:
            target: ``model``, ``alias`` or ``model@agent``.

        Returns:
            The JSON fields to merge under a request body; empty without an agent that sets any.

        Raises:
            UnknownModelError: the profiles define no such model or alias.
            UnknownAgentError: the profiles define no such agent.
        """
        return self.resolve(target).request_defaults

    @contextlib.asynccontextmanager
    async def lease(
        self, target: str, *, start_within: float | None = None
    ) -> AsyncIterator[LocalSidecar]:
        """A ready sidecar for ``target`` (started if needed), held in flight for the block.

        While the block runs the sidecar counts a request in flight: nothing evicts it.

        Args:
            target: ``model``, ``alias`` or ``model@agent``.
            start_within: seconds to wait for the sidecar to be ready (default: the
                profiles' ``server.start_timeout``).

        Yields:
            The ready sidecar's URL, served model name, request defaults and headers.

        Raises:
            UnknownModelError: the profiles define no such model or alias.
            UnknownAgentError: the profiles define no such agent.
            SidecarError: the sidecar could not be made ready (it exited while starting,
                its model file is missing, it reached its start limit).
            CapacityError: the sidecar can never fit under the configured limits.
            TimeoutError: it was not ready within ``start_within`` seconds.
        """
        resolved = self.resolve(target)
        agent = resolved.agent.name if resolved.agent is not None else None
        origin = Origin(resolved.model.id, agent)
        wait = self._start_timeout if start_within is None else start_within
        terms = Terms(priority=resolved.priority)
        lease = self._reconciler.lease(resolved.spec, timeout=wait, origin=origin, terms=terms)
        async with lease as up:
            yield LocalSidecar(
                up.key,
                f"http://{up.host}:{up.port}",
                resolved.upstream_model,
                dict(resolved.request_defaults),
                {name.decode(): value.decode() for name, value in up.headers},
            )

    def status(self) -> list[SidecarView]:
        """Every sidecar as ``llamasup status`` shows it: state, pid, start and ready times,
        requests in flight, the memory estimate (sorted by model, then key)."""
        return self._reconciler.snapshot()

    async def unload(self, target: str) -> bool:
        """Stop ``target``'s sidecar now (it starts again on the next lease).

        Requests in flight on it finish first, within the profiles' ``server.stop_grace``.

        Args:
            target: ``model``, ``alias`` or ``model@agent``.

        Returns:
            Whether a sidecar was running and was stopped.

        Raises:
            UnknownModelError: the profiles define no such model or alias.
            UnknownAgentError: the profiles define no such agent.
        """
        return await self._reconciler.unload(self.resolve(target).spec.key)


@contextlib.asynccontextmanager
async def local_models(
    profiles: Path | str | Profiles,
    *,
    environ: Mapping[str, str] | None = None,
    shutdown_timeout: float = 30.0,
) -> AsyncIterator[LocalModels]:
    """Run a profile set's sidecars for the duration of an ``async with`` block.

    Pinned and ``preload`` models start at once, the others on first lease; when the block
    ends every sidecar is stopped (on Linux they also die with the program if it is killed).

    Args:
        profiles: a profile file or directory, or profiles already loaded.
        environ: the environment ``${env.X}`` in the profiles expands against (default: the
            process's); used only when ``profiles`` is a path.
        shutdown_timeout: about how long, in seconds, stopping every sidecar at the end may
            take.

    Yields:
        The running profile set, to lease sidecars from.

    Raises:
        ProfileError: the profiles do not load; it lists every problem found.
    """
    if not isinstance(profiles, Profiles):
        profiles = load_profiles(Path(profiles), os.environ if environ is None else environ)
    server = profiles.server
    supervisor = Supervisor.for_server(server)
    supervisor.reap_orphans()
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
        reconciler.close()
