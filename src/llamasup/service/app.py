"""The running llamasup: profiles, supervisor, reconciler, watcher, proxy and control API.

``Service`` wires the parts together and owns their lifetimes; ``serve.py`` runs it under
uvicorn with signals and systemd notification. Tests build a ``Service`` directly and serve
its ``asgi`` app on a real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llamasup._version import __version__
from llamasup.errors import ProfileIssue
from llamasup.profiles.store import ProfileStore, ReloadResult
from llamasup.profiles.types import Profiles, http_url, is_loopback
from llamasup.proxy.app import ProxyApp, create_proxy_app
from llamasup.proxy.asgi import ASGIApp
from llamasup.proxy.hooks import ObserverFanOut
from llamasup.reconcile.pool import Origin
from llamasup.reconcile.reconciler import Reconciler
from llamasup.service import event_loop, handover_file
from llamasup.service.adoption import AdoptionReport, TakeOver
from llamasup.service.api import ControlApi
from llamasup.service.auth import ApiKey, ApiKeyError, AuthGate, load_keys
from llamasup.service.browser_gate import BrowserGate
from llamasup.service.compat import CompatRoutes
from llamasup.service.events import EventHub
from llamasup.service.front_limits import FrontLimits, front_limits, open_files_limit
from llamasup.service.host import HostEvents
from llamasup.service.metrics import Metrics
from llamasup.service.ownlog import OwnLog
from llamasup.service.request_log import RequestLog
from llamasup.service.restart import Restarter, RestartError
from llamasup.service.ui_routes import Dashboard
from llamasup.service.ui_session import SessionBook, SessionGate
from llamasup.service.watch import ProfileWatcher
from llamasup.sidecars.procfs import start_time
from llamasup.sidecars.sidecar import Sidecar
from llamasup.sidecars.supervisor import Supervisor
from llamasup.spec.hostcheck import startable_issues

logger = logging.getLogger(__name__)

#: server settings a running llamasup cannot change; a reload that changes them says so
_RESTART_ONLY = ("listen_host", "listen_port", "ports", "state_dir", "restart")


class Service:
    def __init__(
        self,
        path: Path,
        profiles: Profiles,
        *,
        environ: Mapping[str, str] | None = None,
        watch: bool = True,
        listen: tuple[str, int] | None = None,
        allow_public: bool = False,
    ) -> None:
        self.path = path
        #: where this process listens (``--listen`` may override the profile's ``listen``)
        host, port = listen or (profiles.server.listen_host, profiles.server.listen_port)
        self.listen_host = host
        self.listen_url = http_url(host, port)
        self._allow_public = allow_public
        self.environ = os.environ if environ is None else environ
        self.started_with = profiles.server
        #: this process's open files limit (``serve`` raises it before building the service)
        self.open_files = open_files_limit()
        #: what the front enforces on client connections; the protocol reads it for each
        #: new connection, so a reload applies to the next ones
        self.front_limits = self._front_limits_for(profiles)
        self.events = HostEvents()
        self.keys: tuple[ApiKey, ...] = load_keys(profiles.server.api_keys, self.environ)
        self.supervisor = Supervisor.for_server(profiles.server)
        self.reconciler = Reconciler(profiles, self.supervisor)
        self.store = ProfileStore(
            path,
            profiles,
            self._adopt,
            environ=self.environ,
            vet=self._vet,
            on_unchanged=self._refresh_keys,
        )
        self.metrics = Metrics(self.supervisor, self.reconciler, self.store)
        #: what happens, for /api/events (the dashboard, status -w); fed by listeners only
        self.hub = EventHub()
        self.supervisor.subscribe(self.hub.on_sidecar)
        self.reconciler.status.listeners.append(self.hub.on_pass)
        self.store.listeners.append(self.hub.on_reload)
        #: the dashboard's sessions (its page never holds a key)
        self.sessions = SessionBook(lambda: self.keys)
        #: llamasup's own log lines, for llama-swap's /logs
        self.own_log = OwnLog()
        self.compat = CompatRoutes(self, self.own_log.log)
        self.control = ControlApi(self, self.compat, Dashboard(self.sessions))
        self.proxy: ProxyApp = create_proxy_app(
            lambda: self.reconciler.resolver,
            self.reconciler,
            observer=ObserverFanOut(
                self.metrics.observer,
                RequestLog(lambda: self.profiles.server.request_log),
            ),
            fallback=self.control,
        )
        self.asgi: ASGIApp = BrowserGate(
            SessionGate(
                AuthGate(
                    self.proxy,
                    lambda: self.keys,
                    open_metrics=lambda: self.profiles.server.open_metrics,
                ),
                self.sessions,
            ),
            loopback=is_loopback(self.listen_host),  # fixed for the process
            origins=lambda: self.profiles.server.cors_origins,
            hosts=lambda: self.profiles.server.allowed_hosts,
            keyed=lambda: bool(self.keys),
        )
        self._watch = watch
        # looked up at each reload, not bound once: the store (or a test) may wrap it
        self.watcher = ProfileWatcher(
            path,
            lambda trigger, texts: self.store.reload(trigger, texts),  # noqa: PLW0108
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._sidecars_at_shutdown: list[Sidecar] = []
        #: set by ``serve``: takes ``llamasup restart`` requests (None: not restartable, as
        #: when a test or a program runs the service itself)
        self.restarter: Restarter | None = None
        #: when this program image began serving (a planned restart begins a new one)
        self.started_at = time.time()
        #: planned restarts of this process so far
        self.restarts = 0
        #: what the last planned restart handed over and what became of it
        self.last_restart: AdoptionReport | None = None
        self._take_over: TakeOver | None = None

    @property
    def profiles(self) -> Profiles:
        return self.store.current

    def _vet(self, candidate: Profiles) -> list[ProfileIssue]:
        """Why this running llamasup refuses a valid profile set (a reload or apply with any
        issue is rejected like an invalid one, and the last good set keeps serving)."""
        return [
            *self._exposure_issues(candidate),
            # never stop a working sidecar for one that cannot start here
            *startable_issues(self.store.current, candidate, self.environ),
        ]

    def _exposure_issues(self, candidate: Profiles) -> list[ProfileIssue]:
        """A running front on a non-loopback address never loses its last key to a reload or
        an apply (the check ``serve`` makes at startup, kept for the life of the process)."""
        server = candidate.server
        if is_loopback(self.listen_host) or server.api_keys or not self.keys:
            return []
        if self._allow_public or server.allow_public_listen:
            return []
        return [
            ProfileIssue(
                candidate.source,
                None,
                "server.api_keys",
                f"llamasup listens on {self.listen_host} and this change removes every API key, "
                "which would open it to the network: keep a key, or set allow_public_listen: "
                "true if the network is trusted",
            )
        ]

    def _refresh_keys(self, profiles: Profiles) -> None:
        """Read the keys' values again (a rotated key file takes effect on the next reload or
        apply, even one whose profile text is unchanged)."""
        try:
            self.keys = load_keys(profiles.server.api_keys, self.environ)
            self.events.auth_error = None
        except ApiKeyError as exc:
            self.events.auth_error = f"{exc} (the previous keys stay in force)"
            logger.error("%s", self.events.auth_error)

    def restart_needed(self, profiles: Profiles) -> list[str]:
        """Server settings of ``profiles`` that differ from what this process started with
        and only take effect when llamasup restarts."""
        return [
            name
            for name in _RESTART_ONLY
            if getattr(profiles.server, name) != getattr(self.started_with, name)
        ]

    def _front_limits_for(self, profiles: Profiles) -> FrontLimits:
        limits = front_limits(profiles.server, self.open_files)
        wanted = profiles.server.max_connections
        if wanted is not None and wanted > limits.max_connections:
            logger.warning(
                "server.max_connections is %d, but %d open files allow %d client connections: "
                "using %d (raise the open files limit, LimitNOFILE= under systemd, for more)",
                wanted,
                self.open_files,
                limits.max_connections,
                limits.max_connections,
            )
        return limits

    def _adopt(self, profiles: Profiles) -> None:
        self.front_limits = self._front_limits_for(profiles)
        self._refresh_keys(profiles)
        self.events.restart_needed = self.restart_needed(profiles)
        if self.events.restart_needed:
            logger.warning(
                "server settings %s changed: they take effect when llamasup restarts",
                ", ".join(self.events.restart_needed),
            )
        self.reconciler.set_profiles(profiles)

    # -- lifetime --------------------------------------------------------------------------

    async def start(self) -> None:
        """Begin reconciling (pinned and preload sidecars start now) and watching profiles.

        After a hand-over (``take_over``): once the sidecars that were not adopted are gone,
        and with the adopted ones spared, whatever sidecar processes are left of this
        llamasup before its restart, or of a llamasup that died, are killed first.
        """
        self.own_log.install(logging.getLogger("llamasup"))
        if self._take_over is not None:
            await self._take_over.finish()
            self._take_over = None
        adopted = self.last_restart.adopted_pids() if self.last_restart else frozenset()
        await self.supervisor.stop_leftovers(adopted)
        self.supervisor.reap_orphans(adopted)
        self._start_tasks()

    def _start_tasks(self) -> None:
        self._tasks.append(asyncio.create_task(self.reconciler.run(), name="reconciler"))
        if self._watch:
            self._tasks.append(asyncio.create_task(self.watcher.run(), name="watcher"))
        self.reconciler.trigger()

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    # -- a planned restart -------------------------------------------------------------------

    async def restart(self, trigger: str) -> dict[str, Any]:
        """Ask for a planned restart (see ``restart.py``); raises RestartError."""
        if self.restarter is None:
            raise RestartError(
                "this llamasup cannot restart itself (only `llamasup serve` can)",
                "restart_unavailable",
                409,
            )
        if not sys.platform.startswith("linux"):
            # telling a handed-over process from a reused pid needs /proc
            raise RestartError(
                "planned restarts need Linux; stop and start llamasup instead",
                "restart_unavailable",
                409,
            )
        await self.restarter.request(trigger)
        ready = [s.key for s in self.supervisor.statuses() if str(s.sidecar.state) == "ready"]
        return {"restarting": True, "pid": os.getpid(), "handing_over": ready}

    async def take_over(self, path: Path, handover: handover_file.Handover) -> None:
        """Adopt what the previous image handed over (before serving; ``start`` then waits
        for the processes that were not adopted to be stopped)."""
        self._take_over = TakeOver(self.reconciler, self.supervisor.settings.state_dir)
        report = await self._take_over.run(path, handover)
        if report is None:
            return
        self.last_restart = report
        self.restarts = report.restarts
        for outcome in report.outcomes:
            self.metrics.adoptions.labels(outcome.result).inc()
        self.metrics.planned_restarts.set(report.restarts)

    async def hand_over(
        self, listen_fds: Sequence[int], connection_fds: Sequence[int], requested_at: float
    ) -> Path:
        """Stop reconciling and write the hand-over file for the next image (the front has
        drained already); returns its path. ``resume`` undoes it if the exec fails."""
        await self._stop_tasks()
        await self.reconciler.settle()
        supervisor = self.supervisor
        handles = supervisor.hand_over()
        others = [key for key in list(supervisor.keys()) if key not in handles]
        # not ready (loading, failed): a process the next image could not take as it is
        await asyncio.gather(
            *(supervisor.stop(key, reason="restart: not ready, not handed over") for key in others)
        )
        registry = self.reconciler.registry
        records = []
        for key, process in handles.items():
            spec = registry.spec_for(key)
            sidecar = supervisor.get(key)
            if spec is None or sidecar is None:  # pragma: no cover - every sidecar has a spec
                continue
            origin = registry.origin(key) or Origin(spec.model, None)
            records.append(
                handover_file.SidecarRecord(
                    key=key,
                    model=spec.model,
                    agent=origin.agent,
                    agent_flags=origin.extra,
                    agents=tuple(registry.agents(key)),
                    kind=spec.kind,
                    health_path=spec.health_path,
                    argv=(spec.binary, *spec.args),
                    last_used=self.reconciler.leases.last_used(key),
                    process=process,
                )
            )
        pid = os.getpid()
        handover = handover_file.Handover(
            owner_pid=pid,
            owner_start=start_time(pid) or "?",
            owner_version=__version__,
            state_dir=str(supervisor.settings.state_dir.absolute()),
            written_at=time.time(),
            requested_monotonic=requested_at,
            restarts=self.restarts + 1,
            listen_fds=tuple(listen_fds),
            written_monotonic=time.monotonic(),
            connection_fds=tuple(connection_fds),
            sidecars=tuple(records),
        )
        path = handover_file.path_in(supervisor.settings.state_dir)
        handover_file.write(path, handover)
        return path

    def resume(self, path: Path | None) -> None:
        """The exec did not happen: supervise and reconcile as before."""
        if path is not None:
            handover_file.remove(path)
        self.supervisor.resume()
        self.hub.reopen()
        self._start_tasks()

    def process_status(self) -> dict[str, Any]:
        """This llamasup process for status: pid, program start, planned restarts."""
        return {
            "pid": os.getpid(),
            "event_loop": event_loop.loop_name(),
            "started_at": self.started_at,
            "restarts": self.restarts,
            "last_restart": None if self.last_restart is None else self.last_restart.as_dict(),
        }

    async def reload(self, trigger: str) -> ReloadResult:
        return await self.store.reload(trigger)

    async def render_metrics(self) -> tuple[bytes, str]:
        return await self.metrics.render()

    async def close(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - a budget
        """Stop watching and reconciling, then stop every sidecar in parallel within ``timeout``."""
        self.hub.close()
        await self._stop_tasks()
        if self._take_over is not None:  # stopped before it started: the stops still finish
            await self._take_over.finish()
        self._sidecars_at_shutdown = self.supervisor.sidecars()
        await self.compat.aclose()
        await self.supervisor.stop_all(timeout)
        self.reconciler.close()
        await self.metrics.aclose()
        self.own_log.uninstall(logging.getLogger("llamasup"))
        await self.proxy.aclose()

    def force_stop(self) -> None:
        """A second signal: SIGKILL every sidecar now (the shutdown then ends quickly)."""
        sidecars = self._sidecars_at_shutdown or self.supervisor.sidecars()
        for sidecar in sidecars:
            sidecar.abandon()
