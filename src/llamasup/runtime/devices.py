"""The devices a llama-server binary can offload to, from its ``--list-devices`` output.

The format is llama.cpp's ``common_print_available_devices()`` (common/arg.cpp, b11434), printed
to stdout before the process exits 0::

    Available devices:
      CUDA0: NVIDIA GeForce RTX 4090 (24080 MiB, 23557 MiB free)

one line per non-CPU device (``printf("  %s: %s (%zu MiB, %zu MiB free)\\n", name, description,
total / MiB, free / MiB)``), or ``  (none)`` when there is none, as in a CPU-only build. A
description may itself contain parentheses (Mesa's ``AMD Radeon RX 7900 XTX (RADV NAVI31)``, a
virtual CUDA device's ``(dev p0/v1)``), so the sizes are read from the end of the line.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

LIST_DEVICES_TIMEOUT = 30.0  # initialising a GPU runtime can take seconds
VERSION_TIMEOUT = 10.0
HEADER = "Available devices:"
MIB = 1 << 20

#: ggml devices of type ACCEL: listed (only CPU devices are left out), but llama.cpp offloads
#: no layers to them (``llama_supports_gpu_offload`` asks for GPU, IGPU or RPC devices).
#: Names from ggml-blas.cpp, ggml-zendnn.cpp and ggml-zdnn.cpp (b11434).
ACCELERATOR_NAMES = frozenset({"BLAS", "ZenDNN", "zDNN"})

_DEVICE_LINE = re.compile(
    r"^\s+(?P<name>\S+?):\s(?P<description>.*?)\s?"
    r"\((?P<total>\d+) MiB, (?P<free>\d+) MiB free\)\s*$"
)


@dataclass(frozen=True)
class Device:
    """One device as llama-server names it (``CUDA0``, ``ROCm1``, ``Vulkan0``, ``MTL0``).

    ``total`` and ``free`` are bytes, at MiB precision: what the binary reported when asked.
    """

    name: str
    description: str
    total: int
    free: int

    @property
    def offloads(self) -> bool:
        """Can llama.cpp put model layers here (a GPU or an RPC server, not a BLAS library)?"""
        return self.name not in ACCELERATOR_NAMES


def parse_list_devices(text: str) -> list[Device]:
    """The devices in ``--list-devices`` output; ``[]`` for ``(none)``.

    Raises ValueError when the text has no ``Available devices:`` header (a binary too old to
    know the flag, or not a llama-server). Lines after the header that are neither a device nor
    ``(none)`` are skipped.
    """
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == HEADER)
    except StopIteration:
        raise ValueError(f"no {HEADER!r} line in the --list-devices output") from None
    devices = []
    for line in lines[start + 1 :]:
        match = _DEVICE_LINE.match(line)
        if match is not None:
            devices.append(
                Device(
                    name=match["name"].strip(),
                    description=match["description"].strip(),
                    total=int(match["total"]) * MIB,
                    free=int(match["free"]) * MIB,
                )
            )
    return devices


def list_devices(
    path: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = LIST_DEVICES_TIMEOUT,
) -> list[Device] | None:
    """Run ``path --list-devices`` and parse what it prints; never raises.

    None when the binary cannot run, fails, times out, or prints no device list. ``env`` is the
    child's whole environment (default: this process's): ``CUDA_VISIBLE_DEVICES`` and the like
    change what it sees.
    """
    try:
        result = subprocess.run(
            [str(path), "--list-devices"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            env=None if env is None else dict(env),
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if result.returncode != 0:
        return None
    try:
        return parse_list_devices(result.stdout)
    except ValueError:
        return None


_BUILT_WITH = re.compile(r"^built with (?P<what>.+)$", re.MULTILINE)


def build_info(path: Path, *, timeout: float = VERSION_TIMEOUT) -> str | None:
    """The compiler and target from ``--version`` (``GNU 12.2.0 for Linux x86_64``), printed by
    llama.cpp's ``llama_print_build_info`` to stderr; None when absent. It names no backend:
    only ``--list-devices`` shows what a build can offload to."""
    try:
        result = subprocess.run(
            [str(path), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    match = _BUILT_WITH.search(result.stderr + result.stdout)
    return match["what"].strip() if match and result.returncode == 0 else None
