"""A read model of the pool: one frozen row per sidecar key, as status and metrics show them.

Readers (the control API, metrics, the CLI through the API) take a snapshot instead of reaching
into the reconciler, the supervisor and the demand book one call at a time. Rows hold no
secrets: a sidecar's key stays with the leases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llamasup.planner.types import HOST
from llamasup.spec.resolve import SidecarSpec


@dataclass(frozen=True, slots=True)
class SidecarView:
    """One sidecar key.

    ``state`` is what status shows: a process's state (``starting``, ``ready``, ``stopping``,
    ``stopped``, ``failed``), ``draining`` for a ready one being stopped after its requests,
    or, for a key without a process, ``stopped`` (a preload sidecar left stopped), ``waiting``
    (requests wait for it to start) or ``refused`` (the last pass refused it; ``last_error``
    says why). ``supervised`` is true when the supervisor has a process record for it.
    """

    key: str
    model: str
    agents: tuple[str, ...]
    state: str
    supervised: bool
    pid: int | None
    port: int | None
    started_at: float | None
    ready_at: float | None
    restarts: int
    failures: int
    gave_up: bool
    retry_in: float | None
    last_used: float | None
    in_flight: int
    waiting: int
    #: seconds the oldest request still waiting for this key has waited
    oldest_wait: float | None
    #: why it is being drained, when it is (``"alpha: drained for beta (it waited 3.2s; ..."``)
    drain: str | None
    #: while it loads: the last line its process printed
    progress: str | None
    memory: int | None
    pinned: bool
    last_error: str | None
    exit_code: int | None
    argv: tuple[str, ...] | None
    #: ``memory`` by device (``host`` and the budgeted GPUs); None: no GPU is budgeted
    memory_devices: Mapping[str, int] | None = None
    #: buffers by device that llama-server reported at load (with ``-lv 4``; else None)
    memory_reported: Mapping[str, int] | None = None
    #: when this llamasup took the process over from the one before it (a planned restart)
    adopted_at: float | None = None
    #: that llamasup's pid (the same as this one's after a re-exec in place)
    adopted_from: int | None = None

    @property
    def running(self) -> bool:
        """A process exists (it holds memory and a slot)."""
        return self.pid is not None


def argv_of(spec: SidecarSpec | None) -> tuple[str, ...] | None:
    if spec is None:
        return None
    return (spec.binary or "llama-server", *spec.args)


def device_split(view: SidecarView) -> Mapping[str, int]:
    """Where a sidecar's memory sits: by device, or all of it on the host."""
    if view.memory_devices is not None:
        return view.memory_devices
    return {} if view.memory is None else {HOST: view.memory}
