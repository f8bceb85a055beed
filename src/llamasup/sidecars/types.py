"""The records a ``Sidecar`` shares with the world: its settings, state, status and events.

Kept apart from the process code in ``sidecar.py`` so that the control API, the reconciler
and tests can import them without pulling in subprocess plumbing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from llamasup.core import defaults
from llamasup.errors import SidecarError
from llamasup.sidecars.ports import validate_port_range

if TYPE_CHECKING:
    from llamasup.profiles.types import ServerConfig


class SidecarState(StrEnum):
    """Where one sidecar is in its life; only the ``Sidecar`` itself moves it.

    ``stopped`` is both "never started" and "stopped on request"; ``failed`` means the last
    run ended badly (start error, load timeout, crash, unhealthy) and ``last_error`` says how.
    """

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    FAILED = "failed"


class SidecarEventKind(StrEnum):
    READY = "ready"  # a run became ready
    START_FAILED = "start_failed"  # a run never became ready (exit, timeout, bind, exec)
    EXITED = "exited"  # a ready run's process exited on its own
    UNHEALTHY = "unhealthy"  # a ready run failed N health checks in a row and was killed
    STOPPED = "stopped"  # a stop that someone asked for has finished
    REFUSED = "refused"  # the start gate refused to start (start limit reached)
    ADOPTED = "adopted"  # a ready process handed over by the previous llamasup was taken on


@dataclass(frozen=True)
class SidecarSettings:
    """How sidecars are run; one instance is shared by all sidecars of a supervisor.

    Times are in seconds. ``load_timeout`` counts from the last output of the child, not from
    the spawn: a big model that keeps printing progress is never killed for being slow, a
    hung one is killed ``load_timeout`` after it went silent.
    """

    state_dir: Path
    host: str = "127.0.0.1"
    #: below the usual ephemeral ranges (Linux 32768-60999, Windows/macOS 49152-65535), so
    #: outgoing connections of any program on the host do not keep taking sidecar ports
    port_range: tuple[int, int] = defaults.PORTS
    load_timeout: float = defaults.HEALTH_TIMEOUT
    ready_poll_min: float = 0.005
    ready_poll_max: float = 0.2
    probe_timeout: float = 0.5
    health_interval: float = defaults.HEALTH_INTERVAL
    health_timeout: float = 5.0
    unhealthy_threshold: int = defaults.UNHEALTHY_AFTER
    stop_grace: float = defaults.STOP_GRACE
    drain_timeout: float = defaults.STOP_GRACE
    bind_retries: int = 3
    log_ring_lines: int = 1000
    log_tail_lines: int = 20
    log_file_max_bytes: int = 4 * 1024 * 1024
    log_file_backups: int = 1
    #: every llama-server sidecar start gets a fresh secret it requires (``LLAMA_API_KEY``):
    #: its port on loopback then serves nobody but llamasup (not another local user, not a
    #: web page, not whoever binds the port after it); False: sidecars are open
    keyed: bool = False

    def __post_init__(self) -> None:
        validate_port_range(*self.port_range)
        for name in (
            "load_timeout",
            "ready_poll_min",
            "ready_poll_max",
            "probe_timeout",
            "health_interval",
            "health_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"SidecarSettings.{name} must be > 0")
        if self.unhealthy_threshold < 1:
            raise ValueError("SidecarSettings.unhealthy_threshold must be >= 1")
        if self.stop_grace < 0 or self.bind_retries < 0:
            raise ValueError("SidecarSettings.stop_grace and bind_retries must be >= 0")

    @classmethod
    def from_server(cls, server: ServerConfig) -> SidecarSettings:
        """The settings a profile's ``server`` section asks for."""
        return cls(
            state_dir=server.state_dir,
            port_range=server.ports,
            load_timeout=server.health_timeout,
            health_interval=server.health_interval,
            unhealthy_threshold=server.unhealthy_after,
            stop_grace=server.stop_grace,
            drain_timeout=server.stop_grace,
            # a key per sidecar start: their loopback ports answer only llamasup
            keyed=True,
        )

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def config_home(self) -> Path:
        """The empty ``XDG_CONFIG_HOME`` given to children (see ``childenv.child_environment``)."""
        return self.state_dir / "empty-config-home"


@dataclass(frozen=True)
class SidecarStatus:
    """A snapshot of one sidecar for the control API; times are wall-clock epoch seconds."""

    key: str
    model: str
    state: SidecarState
    pid: int | None
    port: int | None
    started_at: float | None
    ready_at: float | None
    restarts: int
    last_error: str | None
    exit_code: int | None
    log_tail: tuple[str, ...]
    #: when this llamasup took the process over from the one before (a planned restart)
    adopted_at: float | None = None
    #: the pid of the llamasup it was taken over from (the same pid after a re-exec)
    adopted_from: int | None = None

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["state"] = str(self.state)
        data["log_tail"] = list(self.log_tail)
        return data


@dataclass(frozen=True)
class SidecarEvent:
    """Told to the sidecar's listener (the supervisor) right after the state changed."""

    key: str
    kind: SidecarEventKind
    status: SidecarStatus
    error: SidecarError | None = None


#: awaited before every start; may wait (backoff) or raise SidecarFailedError (start limit)
StartGate = Callable[[], Awaitable[None]]
#: told every event, synchronously, on the event-loop thread; must not block
EventListener = Callable[[SidecarEvent], None]
#: awaited by ``stop(drain=...)``: returns once the caller's in-flight requests are done
Drain = Callable[[], Awaitable[None]]
