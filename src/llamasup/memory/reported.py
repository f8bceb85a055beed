"""What llama-server says it allocated at load, and how far the estimate was from it.

With ``-lv 4`` (``--verbosity 4``, or ``--verbose``) llama-server logs each buffer it allocates
while loading, one line per buffer type::

    load_tensors:   CPU_Mapped model buffer size =     0.20 MiB
    load_tensors:        CUDA0 model buffer size =  1234.56 MiB
    llama_context:  CUDA_Host  output buffer size =     0.58 MiB
    llama_kv_cache:      CUDA0 KV buffer size =   256.00 MiB
    llama_memory_recurrent:   CPU RS buffer size =     1.25 MiB
    sched_reserve:       CUDA0 compute buffer size =   300.01 MiB

At llama-server's default verbosity (3) it prints none of them, so this is only as good as
the sidecar's flags allow. A buffer type named ``CPU...`` or ``..._Host`` is host memory; any
other name is the device of that name (``CUDA0``, ``Vulkan1``, ``ROCm0``). Every line counts:
a model with sliding-window attention has two KV caches, and prints a KV buffer line for each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from llamasup.core.units import format_bytes
from llamasup.planner.types import HOST

_LINE = re.compile(
    r"\w+:\s+(\S+)\s+(model|KV|RS|output|compute) buffer size\s*=\s*([0-9.]+) (MiB|KiB|GiB|B)\b"
)
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
#: buffer kinds as the estimate names its parts
_PART = {"model": "weights", "KV": "kv_cache", "RS": "kv_cache", "output": "compute"}


def buffer_device(buffer_type: str) -> str:
    """``CPU``, ``CPU_Mapped``, ``CPU_REPACK``, ``CUDA_Host``: host memory; ``CUDA1``: itself."""
    if buffer_type.upper().startswith("CPU") or buffer_type.endswith("_Host"):
        return HOST
    return buffer_type


@dataclass(frozen=True, slots=True)
class ReportedMemory:
    """Bytes llama-server reported, by device and by part (``weights``, ``kv_cache``,
    ``compute``: the estimate's names; output buffers count as compute)."""

    devices: Mapping[str, int]
    parts: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.devices.values())


def reported_memory(lines: Iterable[str]) -> ReportedMemory | None:
    """The buffers in a load's output (None when it printed none)."""
    devices: dict[str, int] = {}
    parts: dict[str, int] = {}
    for line in lines:
        if "buffer size" not in line:
            continue
        match = _LINE.search(line)
        if match is None:
            continue
        buffer_type, kind, size, unit = match.groups()
        bytes_ = round(float(size) * _UNITS[unit])
        device = buffer_device(buffer_type)
        devices[device] = devices.get(device, 0) + bytes_
        part = _PART.get(kind, kind)
        parts[part] = parts.get(part, 0) + bytes_
    if not devices:
        return None
    return ReportedMemory(devices, parts)


def describe_error(
    reported: ReportedMemory,
    estimated_total: int,
    estimated_parts: Mapping[str, int],
    estimated_devices: Mapping[str, int] | None,
) -> str:
    """One line for the log: what llama-server reported against what was estimated, as the
    estimate's error relative to the report (``+10%``: estimated 10% more). ``estimated_parts``
    (``weights``, ``kv_cache``, ``compute``) is empty for a declared ``memory:``."""
    pieces = [
        f"llama-server reported {format_bytes(reported.total)} of buffers, estimated "
        f"{format_bytes(estimated_total)} ({_error(estimated_total, reported.total)})"
    ]
    for part in ("weights", "kv_cache", "compute"):
        if part in estimated_parts:
            pieces.append(_versus(part, estimated_parts[part], reported.parts.get(part, 0)))
    if estimated_devices is not None:
        for device in sorted(set(reported.devices) | set(estimated_devices)):
            want = estimated_devices.get(device, 0)
            pieces.append(_versus(device, want, reported.devices.get(device, 0)))
    return "; ".join(pieces)


def _versus(what: str, estimated: int, reported: int) -> str:
    return (
        f"{what} {format_bytes(reported)} vs {format_bytes(estimated)} "
        f"({_error(estimated, reported)})"
    )


def estimate_error(estimated: int, reported: int) -> float | None:
    """(estimated - reported) / reported; None when nothing was reported."""
    return None if reported <= 0 else (estimated - reported) / reported


def _error(estimated: int, reported: int) -> str:
    error = estimate_error(estimated, reported)
    return "nothing reported" if error is None else f"{error:+.0%}"
