"""The contract between the proxy and whatever keeps sidecars running (the reconciler).

The proxy never starts or stops a process. It asks a :class:`SidecarPool` for a *lease* on the
sidecar a request resolved to, forwards the request to the :class:`Upstream` it gets, and
releases the lease when the response has been sent (or the client left). Everything about
starting, sharing a start between concurrent requests, eviction and restarts belongs to the
pool's owner.

The proxy reads the profiles through a :data:`ResolverSource` on every request, so a hot
reload takes effect for the next request without rebuilding the app.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from llamasup.spec.resolve import Resolver, SidecarSpec

#: returns the resolver of the profiles in force right now (called once per request)
ResolverSource = Callable[[], Resolver]


class Upstream(Protocol):
    """A ready sidecar: where to send the request."""

    @property
    def key(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """Headers every request to this sidecar carries (its credentials)."""
        ...


@dataclass(frozen=True)
class Origin:
    """How a request named a spec, so the pool can re-resolve it after a profile reload and
    see whether its key still holds.

    ``extra`` holds the request's ``X-Agent-Flags`` value (one element, verbatim); re-parse it
    with ``flags.parse_header(" ".join(extra), allow_load=...)``.
    """

    model: str
    agent: str | None
    extra: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Terms:
    """What one request asks of the pool besides its sidecar.

    ``priority``: its demand is served before lower ones (with aging, so none starves);
    ``keep_alive``: seconds its sidecar should stay loaded once idle after it (0: unload it
    as soon as it is idle; None: the profile's ``ttl``), already clamped to the profile's
    ``server.scheduling.max_keep_alive``.
    """

    priority: int = 0
    keep_alive: float | None = None


DEFAULT_TERMS = Terms()


@dataclass(frozen=True, slots=True)
class UpstreamAddress:
    """The plain implementation of :class:`Upstream`."""

    key: str
    host: str
    port: int
    headers: tuple[tuple[bytes, bytes], ...] = ()


class SidecarPool(Protocol):
    """What the proxy needs from the reconciler.

    ``lease(spec, timeout=..., origin=..., terms=...)`` returns an async context manager that,
    on entry:

    * registers demand for ``spec`` (starting its sidecar if needed; concurrent leases of one
      spec share one start),
    * waits until the sidecar is ready, at most ``timeout`` seconds (then raises
      :class:`~llamasup.errors.SidecarError` or :class:`TimeoutError`),
    * raises :class:`~llamasup.errors.CapacityError` when the sidecar can never fit,
    * withdraws the demand if the waiting task is cancelled (the client went away),
    * waits (as demand) instead of entering while the sidecar is being drained,

    and while entered counts the request as in flight, so the sidecar is not evicted under it.
    On exit it stops counting the request and records the time of last use; it should do
    that before its first ``await`` (if it has one), since a client leaving at that moment
    cancels the task. Any other ``LlamasupError`` raised on entry is
    reported to the client as 503.
    """

    def lease(
        self,
        spec: SidecarSpec,
        *,
        timeout: float,
        origin: Origin | None = None,
        terms: Terms = DEFAULT_TERMS,
    ) -> AbstractAsyncContextManager[Upstream]: ...

    def state(self, key: str) -> str | None:
        """The sidecar's state (``"ready"``, ``"starting"``, ...) or None if it has none."""
        ...

    def progress(self, key: str) -> str | None:
        """While the sidecar loads: the last line it printed (its own account of progress)."""
        ...
