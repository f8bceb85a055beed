"""Memory estimates per sidecar key, computed off the event loop and cached.

The planner needs a number for every wanted sidecar; reading GGUF metadata is file I/O, so it
happens in a worker thread when a spec is first seen, and the reconciler is poked when the
number is in. A profile's ``memory`` override wins and needs no I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from llamasup.core.units import format_bytes
from llamasup.errors import LlamasupError
from llamasup.flags.flagset import FlagSet
from llamasup.memory.reported import ReportedMemory, describe_error, reported_memory
from llamasup.memory.split import Footprint, split_estimate
from llamasup.planner.types import HOST
from llamasup.spec.resolve import SidecarSpec

if TYPE_CHECKING:
    from llamasup.memory.estimate import MemoryEstimate

logger = logging.getLogger(__name__)

Estimator = Callable[[SidecarSpec], "MemoryEstimate | int | None"]


def estimate_spec(spec: SidecarSpec) -> MemoryEstimate | None:
    """What a llama-server spec will take, from its GGUF file and load flags."""
    if spec.kind != "llama-server" or spec.model_path is None:
        return None
    return estimate_for_flags(spec.model_path, spec.load_flags)


def estimate_for_flags(gguf_path: str, flags: FlagSet) -> MemoryEstimate:
    """``memory.estimate`` with its inputs read off a sidecar's merged load flags."""
    from llamasup.memory.estimate import estimate  # noqa: PLC0415  (gguf and numpy import slowly)

    def number(name: str, default: int) -> int:
        value = flags.value(name)
        return default if value is None else int(str(value))

    ctx = flags.value("--ctx-size")
    unified = flags.value("--kv-unified")
    return estimate(
        gguf_path,
        ctx_size=None if ctx is None else int(str(ctx)),
        n_parallel=number("--parallel", -1),
        cache_type_k=str(flags.value("--cache-type-k") or "f16"),
        cache_type_v=str(flags.value("--cache-type-v") or "f16"),
        swa_full=flags.value("--swa-full") is True,
        kv_unified=unified if isinstance(unified, bool) else None,
        kv_unified_per_slot=number("--kv-unified-per-slot", 0),
        n_ubatch=number("--ubatch-size", 512),
        flash_attn=flags.value("--flash-attn") != "off",
    )


#: estimates kept; the least recently used go first (a client sending ever new
#: ``X-Agent-Flags`` values makes ever new keys, and must not grow memory without bound)
CACHE_SIZE = 1024


class MemoryEstimates:
    def __init__(self, estimator: Estimator = estimate_spec, size: int = CACHE_SIZE) -> None:
        self._estimator = estimator
        self._size = size
        self._values: OrderedDict[str, MemoryEstimate | int | None] = OrderedDict()
        self._pending: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, spec: SidecarSpec) -> int | None:
        """Bytes in all: the profile's ``memory``, else the estimate, else None (unknown)."""
        value = self._value(spec)
        return value if value is None or isinstance(value, int) else value.total

    def split(
        self, spec: SidecarSpec, gpus: Sequence[str], budgets: Mapping[str, int]
    ) -> dict[str, int] | None:
        """Bytes per device (``host`` and ``gpus``) by the spec's load flags; None when no
        GPU is budgeted or the size is unknown (then all of it counts on the host)."""
        value = self._value(spec)
        if not gpus or value is None:
            return None
        if spec.memory_devices:  # the profile said where it goes
            return dict(spec.memory_devices)
        parts = Footprint.whole(value) if isinstance(value, int) else Footprint.of(value)
        return split_estimate(parts, spec.load_flags, gpus, budgets)

    def compare(
        self,
        spec: SidecarSpec,
        lines: Iterable[str],
        gpus: Sequence[str],
        budgets: Mapping[str, int],
    ) -> ReportedMemory | None:
        """The buffers llama-server reported in ``lines`` (its output at load), with the
        estimate's error against them logged; None when it reported none."""
        reported = reported_memory(lines)
        if reported is None:
            return None
        value = self._value(spec)
        if value is None:
            logger.info("%s: llama-server reported %s of buffers; no estimate to compare",
                        spec.model, format_bytes(reported.total))  # fmt: skip
            return reported
        if isinstance(value, int):
            total, parts = value, {}
        else:
            total = value.weights + value.kv_cache + value.compute
            parts = {"weights": value.weights, "kv_cache": value.kv_cache, "compute": value.compute}
        devices = self.split(spec, gpus, budgets)
        if devices is not None and not isinstance(value, int):
            # the split places the whole estimate; the report has buffers only
            devices[HOST] = max(0, devices.get(HOST, 0) - (value.total - total))
        logger.info("%s: memory at load: %s", spec.model,
                    describe_error(reported, total, parts, devices))  # fmt: skip
        return reported

    def _value(self, spec: SidecarSpec) -> MemoryEstimate | int | None:
        if spec.memory is not None:
            return spec.memory
        if spec.key in self._values:
            self._values.move_to_end(spec.key)
        return self._values.get(spec.key)

    def pending(self, spec: SidecarSpec) -> bool:
        return spec.memory is None and spec.key in self._pending

    def request(self, spec: SidecarSpec, on_ready: Callable[[], None]) -> None:
        """Start estimating ``spec`` in a thread unless known, overridden or under way."""
        key = spec.key
        if spec.memory is not None or key in self._values or key in self._pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._store(key, self._safe(spec))
            return
        self._pending.add(key)

        async def work() -> None:
            try:
                self._store(key, await asyncio.to_thread(self._safe, spec))
            finally:
                self._pending.discard(key)
                on_ready()

        task = loop.create_task(work(), name=f"memory-{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _store(self, key: str, value: MemoryEstimate | int | None) -> None:
        self._values[key] = value
        self._values.move_to_end(key)
        while len(self._values) > self._size:
            self._values.popitem(last=False)

    def _safe(self, spec: SidecarSpec) -> MemoryEstimate | int | None:
        try:
            return self._estimator(spec)
        except (LlamasupError, OSError, ValueError) as exc:
            logger.warning(
                "%s: no memory estimate (%s); set models.%s.memory to budget it",
                spec.model, exc, spec.model,
            )  # fmt: skip
            return None
