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
from collections.abc import Mapping
from pathlib import Path

from llamasup.errors import ProfileIssue
from llamasup.profiles.store import ProfileStore, ReloadResult
from llamasup.profiles.types import Profiles, http_url, is_loopback
from llamasup.proxy.app import ProxyApp, create_proxy_app
from llamasup.proxy.asgi import ASGIApp
from llamasup.proxy.hooks import ObserverFanOut
from llamasup.reconcile.reconciler import Reconciler
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
from llamasup.service.ui_routes import Dashboard
from llamasup.service.ui_session import SessionBook, SessionGate
from llamasup.service.watch import ProfileWatcher
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
        """Begin reconciling (pinned and preload sidecars start now) and watching profiles."""
        self.own_log.install(logging.getLogger("llamasup"))
        self.supervisor.reap_orphans()
        self._tasks.append(asyncio.create_task(self.reconciler.run(), name="reconciler"))
        if self._watch:
            self._tasks.append(asyncio.create_task(self.watcher.run(), name="watcher"))
        self.reconciler.trigger()

    async def reload(self, trigger: str) -> ReloadResult:
        return await self.store.reload(trigger)

    async def render_metrics(self) -> tuple[bytes, str]:
        return await self.metrics.render()

    async def close(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - a budget
        """Stop watching and reconciling, then stop every sidecar in parallel within ``timeout``."""
        self.hub.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._sidecars_at_shutdown = self.supervisor.sidecars()
        await self.compat.aclose()
        await self.supervisor.stop_all(timeout)
        await self.metrics.aclose()
        self.own_log.uninstall(logging.getLogger("llamasup"))
        await self.proxy.aclose()

    def force_stop(self) -> None:
        """A second signal: SIGKILL every sidecar now (the shutdown then ends quickly)."""
        sidecars = self._sidecars_at_shutdown or self.supervisor.sidecars()
        for sidecar in sidecars:
            sidecar.abandon()
