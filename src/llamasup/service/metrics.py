"""``GET /metrics``: llamasup's own series, plus every ready sidecar's llama-server metrics.

Own series (prefix ``llamasup_``) live in a private registry (``exposition.py``) and are fed
by events: the proxy's observer (requests, latency, time to first byte), the supervisor's
events (starts, failures, cold-start time), the reconciler's passes (duration) and stops (by
reason) and the profile store (reload results). Sidecar states, in-flight requests and
memory estimates are read at scrape time.

Sidecars started with ``--metrics`` answer ``/metrics`` themselves (``llamacpp:*`` series);
at scrape time each ready sidecar is asked (concurrently, bounded by ``SCRAPE_TIMEOUT``) and
its samples are re-exposed with ``model`` and ``sidecar`` labels added, one family per name
(``sidecar_metrics.py``, imported then: a front nobody scrapes never loads prometheus_client).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from llamasup.planner.types import Stop
from llamasup.proxy.hooks import RequestRecord
from llamasup.reconcile.history import PassRecord
from llamasup.reconcile.snapshot import device_split
from llamasup.service.exposition import (
    CONTENT_TYPE,
    Counter,
    Family,
    Gauge,
    GaugeFamily,
    Histogram,
    Registry,
    render,
)
from llamasup.sidecars.supervisor import SupervisorEvent
from llamasup.sidecars.types import SidecarEventKind, SidecarState

if TYPE_CHECKING:
    import httpx

    from llamasup.profiles.store import ProfileStore, ReloadResult
    from llamasup.reconcile.reconciler import Reconciler
    from llamasup.sidecars.supervisor import Supervisor

SCRAPE_TIMEOUT = 2.0
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


class RequestObserver:
    """The proxy's :class:`~llamasup.proxy.hooks.ProxyObserver`: counters and histograms."""

    def __init__(self, registry: Registry) -> None:
        labels = ("model", "agent", "route")
        self.requests = Counter(
            "llamasup_requests",
            "Requests through the proxy by model, agent, route and status",
            (*labels, "status"),
            registry=registry,
        )
        self.latency = Histogram(
            "llamasup_request_duration_seconds",
            "Request duration from arrival to the end of the response",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttfb = Histogram(
            "llamasup_time_to_first_byte_seconds",
            "Time from a request's arrival to the first response byte",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.wait = Histogram(
            "llamasup_request_wait_seconds",
            "Time a request waited for a ready sidecar and a concurrency slot",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "llamasup_requests_in_flight",
            "Requests being forwarded right now",
            ("model", "agent"),
            registry=registry,
        )

    def request_started(self, route: str, model: str, agent: str) -> None:
        self.in_flight.labels(model, agent).inc()

    def request_finished(self, record: RequestRecord) -> None:
        if record.started:
            self.in_flight.labels(record.model, record.agent).dec()
        labels = (record.model, record.agent, record.route)
        self.requests.labels(*labels, str(record.status)).inc()
        self.latency.labels(*labels).observe(record.duration)
        if record.ttfb is not None:
            self.ttfb.labels(*labels).observe(record.ttfb)
        if record.started:
            self.wait.labels(*labels).observe(record.wait)


class _LiveCollector:
    """What is true at scrape time: sidecars by state, in flight, memory estimates."""

    def __init__(self, reconciler: Reconciler) -> None:
        self._reconciler = reconciler

    def collect(self) -> Iterator[Family]:
        reconciler = self._reconciler
        states = GaugeFamily(
            "llamasup_sidecars", "Sidecars by model and state", labels=("model", "state")
        )
        counts: dict[tuple[str, str], int] = {}
        for model in reconciler.profiles.models:
            for each in SidecarState:
                counts[(model, str(each))] = 0
        in_flight = GaugeFamily(
            "llamasup_sidecar_in_flight",
            "Requests in flight per sidecar",
            labels=("model", "sidecar"),
        )
        memory = GaugeFamily(
            "llamasup_sidecar_memory_estimate_bytes",
            "Estimated memory of each sidecar (weights + KV cache + compute)",
            labels=("model", "sidecar"),
        )
        loading = GaugeFamily(
            "llamasup_sidecar_loading_seconds",
            "Seconds each sidecar that is still loading has been at it",
            labels=("model", "sidecar"),
        )
        on_devices = GaugeFamily(
            "llamasup_device_memory_estimate_bytes",
            "Estimated memory of running sidecars on each budgeted device (host and GPUs)",
            labels=("device",),
        )
        budgets = GaugeFamily(
            "llamasup_device_memory_budget_bytes",
            "server.memory_budget per device",
            labels=("device",),
        )
        device_budgets = reconciler.profiles.server.device_budgets
        held: dict[str, int] = dict.fromkeys((name for name, _ in device_budgets), 0)
        for name, budget in device_budgets:
            budgets.add_metric((name,), budget)
        now = time.time()
        waiting_total = 0
        queues: dict[str, int] = dict.fromkeys(reconciler.profiles.models, 0)
        for view in reconciler.snapshot():
            waiting_total += view.waiting
            if view.model:
                queues[view.model] = queues.get(view.model, 0) + view.waiting
            if not view.supervised:
                continue
            # a process's own state: a draining sidecar is still a ready one here
            state = "failed" if view.gave_up else _PROCESS_STATE.get(view.state, view.state)
            counts[(view.model, state)] = counts.get((view.model, state), 0) + 1
            in_flight.add_metric((view.model, view.key), view.in_flight)
            if view.state == "starting" and view.started_at is not None:
                loading.add_metric((view.model, view.key), max(0.0, now - view.started_at))
            if view.memory is not None:
                memory.add_metric((view.model, view.key), view.memory)
            if view.running and device_budgets:
                for name, amount in device_split(view).items():
                    held[name] = held.get(name, 0) + amount
        for name, amount in sorted(held.items()):
            on_devices.add_metric((name,), amount)
        for (model, state), count in sorted(counts.items()):
            states.add_metric((model, state), count)
        waiting = GaugeFamily("llamasup_demands_waiting", "Requests waiting for a sidecar to start")
        waiting.add_metric((), waiting_total)
        queue = GaugeFamily(
            "llamasup_queue_length",
            "Requests waiting for a model's sidecar to start or to come back from a swap",
            labels=("model",),
        )
        for model, count in sorted(queues.items()):
            queue.add_metric((model,), count)
        yield from (states, in_flight, memory, waiting, queue, loading, on_devices, budgets)


_PROCESS_STATE = {"draining": "ready"}
#: stops that make room for another model
_SWAPS = frozenset({"evicted-lru", "evicted-memory", "group", "contention"})


class Metrics:
    def __init__(self, supervisor: Supervisor, reconciler: Reconciler, store: ProfileStore) -> None:
        self._supervisor = supervisor
        self.registry = Registry()
        registry = self.registry
        self.observer = RequestObserver(registry)
        self.starts = Counter(
            "llamasup_sidecar_starts", "Sidecars that became ready", ("model",), registry=registry
        )
        self.failures = Counter(
            "llamasup_sidecar_failures",
            "Sidecar runs that failed: start_failed, exited, unhealthy",
            ("model", "kind"),
            registry=registry,
        )
        self.restarts = Counter(
            "llamasup_sidecar_restarts",
            "Restarts scheduled by the restart policy after a failure",
            ("model",),
            registry=registry,
        )
        self.cold_start = Histogram(
            "llamasup_cold_start_seconds",
            "Time from spawning a sidecar to its first successful health check",
            ("model",),
            buckets=_START_BUCKETS,
            registry=registry,
        )
        self.stops = Counter(
            "llamasup_sidecar_stops",
            "Running sidecars stopped by the reconciler or an operator, by reason "
            "(evicted-lru, evicted-memory, idle-ttl, keep-alive, changed, removed, group, "
            "contention, unloaded)",
            ("reason",),
            registry=registry,
        )
        self.swaps = Counter(
            "llamasup_swaps",
            "Sidecars stopped to make room for another model (evictions, group and contention "
            "drains), by model",
            ("model",),
            registry=registry,
        )
        self.passes = Counter(
            "llamasup_reconcile_passes", "Reconciler passes by result", ("result",),
            registry=registry,
        )  # fmt: skip
        self.pass_duration = Histogram(
            "llamasup_reconcile_duration_seconds",
            "Duration of one reconciler pass (plan and stops; starts are not awaited)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=registry,
        )
        self.reloads = Counter(
            "llamasup_profile_reloads",
            "Profile reloads and applies by trigger and result",
            ("trigger", "result"),
            registry=registry,
        )
        self.adoptions = Counter(
            "llamasup_sidecar_adoptions",
            "Sidecars handed over by a planned restart, by what became of them: adopted (kept "
            "running, no reload), replaced (no longer wanted as they were), unhealthy, "
            "orphaned (stopped), gone, foreign (the pid was another process: left alone)",
            ("result",),
            registry=registry,
        )
        self.planned_restarts = Gauge(
            "llamasup_planned_restarts",
            "Planned restarts of this llamasup process (re-executed in place, sidecars kept)",
            registry=registry,
        )
        registry.register(_LiveCollector(reconciler))
        supervisor.subscribe(self._on_sidecar)
        reconciler.status.listeners.append(self._on_pass)
        reconciler.stop_listeners.append(self._on_stop)
        store.listeners.append(self._on_reload)
        # httpx is imported at the first scrape: a front nobody scrapes never loads it (~6 MB)
        self._client: httpx.AsyncClient | None = None

    # -- event feeds -----------------------------------------------------------------------

    def _on_sidecar(self, event: SupervisorEvent) -> None:
        model = event.status.model
        if event.kind is SidecarEventKind.READY:
            self.starts.labels(model).inc()
            status = event.status
            if status.started_at is not None and status.ready_at is not None:
                self.cold_start.labels(model).observe(max(0.0, status.ready_at - status.started_at))
        elif event.kind in (
            SidecarEventKind.START_FAILED,
            SidecarEventKind.EXITED,
            SidecarEventKind.UNHEALTHY,
        ):
            self.failures.labels(model, str(event.kind)).inc()
            if event.decision is not None and not event.decision.give_up:
                self.restarts.labels(model).inc()

    def _on_pass(self, record: PassRecord) -> None:
        self.passes.labels("error" if record.error else "ok").inc()
        self.pass_duration.observe(record.duration)

    def _on_reload(self, result: ReloadResult) -> None:
        self.reloads.labels(result.trigger, result.result).inc()

    def _on_stop(self, stop: Stop, model: str) -> None:
        self.stops.labels(stop.reason).inc()
        if stop.reason in _SWAPS:
            self.swaps.labels(model).inc()

    # -- exposition --------------------------------------------------------------------------

    async def render(self) -> tuple[bytes, str]:
        own = render(self.registry)
        sidecar_text = await self._sidecar_metrics()
        return own + sidecar_text, CONTENT_TYPE

    async def _sidecar_metrics(self) -> bytes:
        supervisor = self._supervisor
        targets = [
            (status.sidecar.model, status.key, status.sidecar.port, sidecar.auth_headers)
            for status in supervisor.statuses()
            if status.sidecar.state is SidecarState.READY
            and status.sidecar.port is not None
            and (sidecar := supervisor.get(status.key)) is not None
        ]
        if not targets:
            return b""
        host = supervisor.settings.host
        import httpx  # noqa: PLC0415 - see __init__

        from llamasup.service import sidecar_metrics  # noqa: PLC0415 - prometheus_client

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=SCRAPE_TIMEOUT, trust_env=False)
        client = self._client

        async def fetch(port: int, auth: tuple[tuple[bytes, bytes], ...]) -> str | None:
            headers = {k.decode(): v.decode() for k, v in auth}
            try:
                response = await client.get(f"http://{host}:{port}/metrics", headers=headers)
            except httpx.HTTPError:
                return None
            return response.text if response.status_code == 200 else None

        texts = await asyncio.gather(*(fetch(port, auth) for _, _, port, auth in targets))
        return sidecar_metrics.reexpose(
            (model, key, text)
            for (model, key, _, _), text in zip(targets, texts, strict=True)
            if text is not None
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
