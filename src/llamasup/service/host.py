"""What the control API, status and metrics may see and ask of a running llamasup.

They depend on this small protocol, not on :class:`~llamasup.service.app.Service` (which
implements it): reads go through the reconciler's snapshot, writes through the reconciler's
``unload`` and the profile store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from llamasup.profiles.store import ProfileStore, ReloadResult
from llamasup.profiles.types import Profiles
from llamasup.reconcile.reconciler import Reconciler
from llamasup.service.events import EventHub
from llamasup.service.watch import ProfileWatcher


@dataclass
class HostEvents:
    """Notes for status: problems with the last reload that did not reject it."""

    auth_error: str | None = None
    restart_needed: list[str] = field(default_factory=list)


class ControlHost(Protocol):
    @property
    def listen_url(self) -> str: ...

    @property
    def events(self) -> HostEvents: ...

    @property
    def store(self) -> ProfileStore: ...

    @property
    def reconciler(self) -> Reconciler: ...

    @property
    def profiles(self) -> Profiles: ...

    @property
    def watcher(self) -> ProfileWatcher: ...

    @property
    def hub(self) -> EventHub:
        """Where ``/api/events`` streams come from."""
        ...

    def restart_needed(self, profiles: Profiles) -> list[str]:
        """Server settings of ``profiles`` that take effect only when llamasup restarts."""
        ...

    async def reload(self, trigger: str) -> ReloadResult: ...

    async def restart(self, trigger: str) -> dict[str, Any]:
        """Ask for a planned restart (sidecars kept); raises ``RestartError``."""
        ...

    def process_status(self) -> dict[str, Any]:
        """This llamasup process: pid, when it began serving, its planned restarts."""
        ...

    async def render_metrics(self) -> tuple[bytes, str]:
        """The ``/metrics`` exposition and its content type."""
        ...
