"""A sidecar's memory estimate split between the host and its GPUs, from its load flags.

The split follows llama.cpp's layer assignment closely enough to budget devices, and is an
approximation where noted:

- ``-ngl N`` offloads the last N repeating layers (``auto``/``all``, and llama-server's
  default ``auto``, count as all of them); each layer's share of the weights and of the KV
  cache goes to the GPUs, the rest (embeddings, the layers kept back) stays on the host.
  Approximated: all layers weigh the same, and the output layer is counted with the host.
- ``--no-kv-offload``: the KV cache stays on the host.
- the GPUs share the offloaded part by ``--tensor-split`` (default: equally; llama.cpp splits
  by free memory, which a budget cannot know), or all of it goes to ``--main-gpu`` with
  ``--split-mode none``. ``--device`` picks and orders the GPUs (``none``: host only).
- the compute buffer sits on the main GPU once anything is offloaded, else on the host.
- not modelled: ``--cpu-moe``/``--n-cpu-moe`` and ``-ot`` overrides (their tensors are
  counted where their layer goes), and a tensor-split that names more GPUs than are listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llamasup.flags.flagset import FlagSet
from llamasup.planner.types import HOST

if TYPE_CHECKING:
    from llamasup.memory.estimate import MemoryEstimate


@dataclass(frozen=True, slots=True)
class Footprint:
    """The parts of an estimate a split needs."""

    total: int
    weights: int
    kv_cache: int = 0
    compute: int = 0
    n_layer: int = 1

    @classmethod
    def of(cls, estimate: MemoryEstimate) -> Footprint:
        return cls(
            estimate.total, estimate.weights, estimate.kv_cache, estimate.compute, estimate.n_layer
        )

    @classmethod
    def whole(cls, total: int) -> Footprint:
        """A declared size (``models.X.memory``): one block that goes wherever the layers go
        (on the GPUs unless ``-ngl 0`` or ``--device none``)."""
        return cls(total, total)


def split_estimate(
    estimate: MemoryEstimate | Footprint, flags: FlagSet, gpus: Sequence[str]
) -> dict[str, int]:
    """Bytes per device (``host`` and each GPU named in ``gpus``), summing to the total."""
    if not isinstance(estimate, Footprint):
        estimate = Footprint.of(estimate)
    devices = _devices(flags, gpus)
    layers = estimate.n_layer
    offloaded = _offloaded_layers(flags, layers)
    if not devices or layers <= 0 or offloaded == 0:
        return {HOST: estimate.total}
    fraction = offloaded / layers
    on_gpus = int(estimate.weights * fraction)
    if flags.value("--kv-offload") is not False:
        on_gpus += int(estimate.kv_cache * fraction)
    shares = _shares(flags, devices)
    split = {device: int(on_gpus * share) for device, share in zip(devices, shares, strict=True)}
    main = devices[_main_gpu(flags, len(devices))]
    split[main] = split.get(main, 0) + estimate.compute
    split[HOST] = estimate.total - sum(split.values())
    return split


def _devices(flags: FlagSet, gpus: Sequence[str]) -> list[str]:
    chosen = flags.value("--device")
    if chosen is None:
        return list(gpus)
    names = [name.strip() for name in str(chosen).split(",") if name.strip()]
    return [] if names == ["none"] else names


def _offloaded_layers(flags: FlagSet, layers: int) -> int:
    value = flags.value("--n-gpu-layers")
    if value is None or str(value) in ("auto", "all"):
        return layers
    return max(0, min(int(str(value)), layers))


def _shares(flags: FlagSet, devices: list[str]) -> list[float]:
    if flags.value("--split-mode") == "none":
        main = _main_gpu(flags, len(devices))
        return [1.0 if index == main else 0.0 for index in range(len(devices))]
    raw = flags.value("--tensor-split")
    if raw is not None:
        try:
            weights = [float(part) for part in str(raw).split(",")][: len(devices)]
        except ValueError:
            weights = []
        weights += [0.0] * (len(devices) - len(weights))
        total = sum(weights)
        if total > 0:
            return [weight / total for weight in weights]
    return [1 / len(devices)] * len(devices)


def _main_gpu(flags: FlagSet, count: int) -> int:
    value = flags.value("--main-gpu")
    index = 0 if value is None else int(str(value))
    return index if 0 <= index < count else 0
