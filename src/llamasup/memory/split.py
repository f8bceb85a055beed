"""A sidecar's memory estimate split between the host and its GPUs, from its load flags.

It follows llama.cpp's assignment (``llama-model.cpp``, ``load_tensors``) tensor by tensor:

- ``-ngl N`` offloads the last N of the ``n_layer + 1`` layers, the output layer counting as
  the last one (``auto``/``all``, and llama-server's default ``auto``, offload all of them);
  the input layer (token embeddings) always stays on the host.
- the offloaded layers go to the GPUs in contiguous runs, in the proportions of
  ``--tensor-split``; without it llama.cpp uses each GPU's free memory, taken here as each
  GPU's budget. ``--split-mode none`` puts them all on ``--main-gpu``. ``--device`` picks and
  orders the GPUs (``none``: host only); otherwise the budgeted GPUs in their order.
- ``-ot PATTERN=TYPE`` overrides come first, the first match winning: a tensor whose name
  matches goes to that buffer type (``CPU``, ``*_Host``: host; a device name: that device).
  ``--cpu-moe`` keeps every MoE expert tensor on the host, ``--n-cpu-moe N`` those of the
  first N layers.
- each layer's KV cache (or recurrent state) goes with its layer, or stays on the host with
  ``--no-kv-offload``.
- the compute buffer goes to the main GPU once anything is offloaded, else to the host.

Approximated: ``--split-mode row`` is counted like ``layer``; ``-ot`` patterns are Python
regular expressions searched in tensor names (llama.cpp uses std::regex, ECMAScript: the
same for the patterns people write); the output and runtime buffers count on the host.
Without the tensor list (a declared ``memory:``), each layer is taken as the same size.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING

from llamasup.flags.flagset import FlagSet
from llamasup.memory.reported import buffer_device
from llamasup.planner.types import HOST

if TYPE_CHECKING:
    from llamasup.memory.estimate import MemoryEstimate

#: llama.cpp's pattern of MoE expert tensors (``--cpu-moe``, ``--n-cpu-moe``)
_EXPERTS = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"
_LAYER = re.compile(r"^blk\.(\d+)\.")
_OUTPUT = ("output.", "output_norm.")


@dataclass(frozen=True, slots=True)
class Footprint:
    """The parts of an estimate a split needs."""

    total: int
    weights: int
    kv_cache: int = 0
    compute: int = 0
    n_layer: int = 1
    layer_kv: tuple[int, ...] = ()
    tensors: tuple[tuple[str, int], ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, estimate: MemoryEstimate) -> Footprint:
        return cls(
            estimate.total,
            estimate.weights,
            estimate.kv_cache,
            estimate.compute,
            estimate.n_layer,
            estimate.layer_kv,
            estimate.tensors,
        )

    @classmethod
    def whole(cls, total: int) -> Footprint:
        """A declared size (``models.X.memory``): one block that goes wherever the layers go
        (on the GPUs unless ``-ngl 0`` or ``--device none``)."""
        return cls(total, total)


def split_estimate(
    estimate: MemoryEstimate | Footprint,
    flags: FlagSet,
    gpus: Sequence[str],
    budgets: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Bytes per device (``host`` and the GPUs used), summing to the total.

    ``gpus`` are the GPUs a sidecar may use unless ``--device`` says otherwise, in order;
    ``budgets`` weigh them when there is no ``--tensor-split`` (default: equally).
    """
    parts = estimate if isinstance(estimate, Footprint) else Footprint.of(estimate)
    devices = _devices(flags, gpus)
    layers = _Layers(parts.n_layer, _gpu_layers(flags, parts.n_layer), devices, flags, budgets)
    split: dict[str, int] = dict.fromkeys(devices, 0)
    overrides = _overrides(flags, parts.n_layer) if devices else []
    if parts.tensors:
        for name, size in parts.tensors:
            device = _override(name, overrides)
            if device is None:
                device = layers.device(_layer_of(name, parts.n_layer))
            split[device] = split.get(device, 0) + size
    else:  # a declared size: the repeating layers' share, each layer alike
        for il in range(parts.n_layer):
            device = layers.device(il)
            split[device] = split.get(device, 0) + parts.weights // parts.n_layer
    if flags.value("--kv-offload") is not False:
        per_layer = parts.layer_kv or _even(parts.kv_cache, parts.n_layer)
        for il, size in enumerate(per_layer):
            device = layers.device(il)
            split[device] = split.get(device, 0) + size
    if layers.offloaded:
        split[layers.main] = split.get(layers.main, 0) + parts.compute
    split.pop(HOST, None)
    if not any(split.values()):
        return {HOST: parts.total}
    split[HOST] = parts.total - sum(split.values())
    return split


class _Layers:
    """Which device each layer is on (``n_layer`` is the output layer, -1 the input)."""

    def __init__(
        self,
        n_layer: int,
        gpu_layers: int,
        devices: list[str],
        flags: FlagSet,
        budgets: Mapping[str, int] | None,
    ) -> None:
        self.n_layer = n_layer
        self.devices = devices
        self.offloaded = min(gpu_layers, n_layer + 1) if devices else 0
        self.start = n_layer + 1 - self.offloaded
        self.main = devices[_main_gpu(flags, len(devices))] if devices else HOST
        self.single = flags.value("--split-mode") == "none"
        weights = _weights(flags, devices, budgets or {})
        total = sum(weights)
        self.bounds = [value / total for value in accumulate(weights)]

    def device(self, layer: int) -> str:
        if layer < 0 or layer < self.start or not self.offloaded:
            return HOST
        if self.single:
            return self.main
        at = (layer - self.start) / self.offloaded
        index = bisect.bisect_right(self.bounds, at)
        return self.devices[min(index, len(self.devices) - 1)]


def _layer_of(name: str, n_layer: int) -> int:
    match = _LAYER.match(name)
    if match is not None:
        return int(match.group(1))
    return n_layer if name.startswith(_OUTPUT) else -1


def _devices(flags: FlagSet, gpus: Sequence[str]) -> list[str]:
    chosen = flags.value("--device")
    if chosen is None:
        return list(gpus)
    names = [name.strip() for name in str(chosen).split(",") if name.strip()]
    return [] if names == ["none"] else names


def _gpu_layers(flags: FlagSet, n_layer: int) -> int:
    value = flags.value("--n-gpu-layers")
    if value is None or str(value) in ("auto", "all"):
        return n_layer + 1
    return max(0, int(str(value)))


def _weights(flags: FlagSet, devices: list[str], budgets: Mapping[str, int]) -> list[float]:
    raw = flags.value("--tensor-split")
    if raw is not None:
        try:
            weights = [float(part) for part in str(raw).split(",")][: len(devices)]
        except ValueError:
            weights = []
        weights += [0.0] * (len(devices) - len(weights))
        if sum(weights) > 0:
            return weights
    if devices and all(budgets.get(device, 0) > 0 for device in devices):
        return [float(budgets[device]) for device in devices]
    return [1.0] * max(1, len(devices))


def _main_gpu(flags: FlagSet, count: int) -> int:
    value = flags.value("--main-gpu")
    index = 0 if value is None else int(str(value))
    return index if 0 <= index < count else 0


def _overrides(flags: FlagSet, n_layer: int) -> list[tuple[re.Pattern[str], str]]:
    found: list[tuple[re.Pattern[str], str]] = []
    raw = flags.value("--override-tensor")
    values = raw if isinstance(raw, tuple) else () if raw is None else (raw,)
    for value in values:
        for item in str(value).split(","):
            pattern, sep, buffer_type = item.rpartition("=")
            if not sep or not pattern:
                continue
            try:
                found.append((re.compile(pattern), buffer_device(buffer_type.strip())))
            except re.error:
                continue  # llama-server refuses it at start; nothing to place
    if flags.value("--cpu-moe") is True:
        found.append((re.compile(_EXPERTS), HOST))
    else:
        n_cpu_moe = flags.value("--n-cpu-moe")
        for il in range(min(int(str(n_cpu_moe or 0)), n_layer)):
            found.append((re.compile(rf"blk\.{il}{_EXPERTS}"), HOST))
    return found


def _override(name: str, overrides: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, device in overrides:
        if pattern.search(name):
            return device
    return None


def _even(total: int, count: int) -> list[int]:
    return [total // count] * count if count > 0 else []
