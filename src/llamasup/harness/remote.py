"""A session on a running llamasup (``--server URL``): requests go through its front like any
client's, each variant's flags in the ``X-Agent-Flags`` header (the server must allow them:
``server.agent_flags: {enabled: true, allow_load_flags: [...]}``).

The facts come from the control API: ``/api/status`` has the sidecar's pid, start and ready
times and memory estimate; the variant's key is computed from the served profile set, which
sits on this host (llamasup supervises one host). A sidecar this session did not start is
measured as it runs and left running; one it started is unloaded when the variant is done.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from llamasup.errors import LlamasupError
from llamasup.flags.flagset import parse_header
from llamasup.harness.identity import server_version
from llamasup.harness.session import Described, Endpoint, Process, Session
from llamasup.harness.targets import Variant
from llamasup.profiles.load import load_profiles
from llamasup.profiles.types import Profiles
from llamasup.spec.resolve import SidecarSpec, resolve, split_target

AGENT_FLAGS_HEADER = "X-Agent-Flags"


class RemoteError(LlamasupError):
    """The running llamasup cannot be used for this run (unreachable, refused, no flags)."""


class RemoteSession(Session):
    """Variants served by the llamasup at ``client.base_url`` (see :func:`open_remote`)."""

    def __init__(self, client: httpx.AsyncClient, profiles: Profiles) -> None:
        self._client = client
        self._profiles = profiles
        self._started: set[str] = set()

    def _spec(self, variant: Variant) -> SidecarSpec:
        model, agent = split_target(variant.target)
        extra = None
        if variant.flags:
            allow = self._profiles.server.agent_flags_allow_load
            extra = parse_header(shlex.join(variant.flags), allow_load=allow)
        return resolve(self._profiles, model, agent, extra=extra).spec

    def describe(self, variant: Variant) -> Described:
        spec = self._spec(variant)
        version = server_version(spec.binary) if spec.kind == "llama-server" else None
        return Described(spec.key, spec.model_path, version)

    async def _row(self, key: str) -> Mapping[str, Any] | None:
        status = await _json(self._client, "GET", "/api/status")
        rows = status.get("sidecars") or []
        return next((r for r in rows if r.get("key") == key and r.get("pid")), None)

    @contextlib.asynccontextmanager
    async def use(self, variant: Variant) -> AsyncIterator[Endpoint]:
        key = self._spec(variant).key
        if await self._row(key) is None:
            self._started.add(key)
        headers = {AGENT_FLAGS_HEADER: shlex.join(variant.flags)} if variant.flags else {}
        base = str(self._client.base_url).rstrip("/")
        auth = {k: v for k, v in self._client.headers.items() if k.lower() == "authorization"}
        yield Endpoint(base, {**auth, **headers}, {"model": variant.target})

    async def process(self, variant: Variant) -> Process | None:
        key = self._spec(variant).key
        row = await self._row(key)
        if row is None:
            return None
        load = None
        started, ready = row.get("started_at"), row.get("ready_at")
        if key in self._started and started is not None and ready is not None:
            load = max(0.0, float(ready) - float(started))
        return Process(row.get("pid"), load, row.get("memory"))

    async def release(self, variant: Variant) -> None:
        key = self._spec(variant).key
        if key in self._started:
            await _json(self._client, "POST", "/api/unload", {"key": key})
            self._started.discard(key)


async def _json(
    client: httpx.AsyncClient, method: str, path: str, body: Any = None
) -> dict[str, Any]:
    try:
        response = await client.request(method, path, json=body)
    except httpx.HTTPError as exc:
        raise RemoteError(f"{client.base_url}: {exc}") from exc
    if response.status_code >= 400:
        raise RemoteError(f"{method} {path}: HTTP {response.status_code}: {response.text[:300]}")
    data = response.json()
    if not isinstance(data, dict):
        raise RemoteError(f"{method} {path}: not a JSON object")
    return data


@contextlib.asynccontextmanager
async def open_remote(
    url: str,
    *,
    api_key: str | None = None,
    timeout: float = 600.0,  # noqa: ASYNC109
) -> AsyncIterator[RemoteSession]:
    """A :class:`RemoteSession` on the llamasup at ``url`` and the profile set it serves.

    Raises:
        RemoteError: it does not answer, or its profile set cannot be read on this host.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=timeout, trust_env=False
    ) as client:
        status = await _json(client, "GET", "/api/status")
        source = (status.get("profiles") or {}).get("source")
        if not source:
            raise RemoteError(f"{url}: /api/status names no profile source")
        try:
            profiles = load_profiles(Path(source), os.environ)
        except LlamasupError as exc:
            raise RemoteError(
                f"the profiles {url} serves ({source}) cannot be read here: {exc}"
            ) from exc
        yield RemoteSession(client, profiles)
