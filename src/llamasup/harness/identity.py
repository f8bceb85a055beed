"""What was measured, and with what: the model file's identity, the llama-server build, the
host's load, and a sidecar process's memory as the kernel counts it."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from llamasup.errors import RuntimeNotFoundError
from llamasup.runtime.locate import binary_version, resolve_binary

#: bytes hashed at each end of a model file: the GGUF header and tensor index sit at the
#: start; together with the size this tells files apart without reading gigabytes
_EDGE = 1 << 20


@functools.lru_cache(maxsize=64)
def _fingerprint(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(_EDGE))
        if size > 2 * _EDGE:
            handle.seek(size - _EDGE)
            digest.update(handle.read(_EDGE))
    return digest.hexdigest()[:16]


def model_identity(path: str | None) -> dict[str, Any]:
    """``{"file", "size", "fingerprint"}`` of a model file (a copy or a move keeps it; an edit
    changes it); ``{"file": None}`` for a model without a local file."""
    if path is None:
        return {"file": None}
    try:
        stat = os.stat(path)
    except OSError:
        return {"file": Path(path).name, "size": None, "fingerprint": None}
    return {
        "file": Path(path).name,
        "size": stat.st_size,
        "fingerprint": _fingerprint(path, stat.st_size, stat.st_mtime_ns),
    }


@functools.lru_cache(maxsize=16)
def server_version(configured: str | None) -> str | None:
    """``b<build>-<commit>`` of the llama-server a spec runs (``--version``), None if unknown."""
    try:
        path = resolve_binary(configured or None, os.environ).path
    except RuntimeNotFoundError:
        return None
    return binary_version(path)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages: a shared machine's numbers need them beside."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def process_memory(pid: int | None) -> dict[str, int | None]:
    """``{"rss", "rss_peak"}`` in bytes from ``/proc/PID/status`` (``VmRSS``, ``VmHWM``).

    ``VmHWM`` is the kernel's high-water mark of the process's resident set since it
    started: a peak no sampling loop can miss. Children of the process are not counted.
    """
    found: dict[str, int | None] = {"rss": None, "rss_peak": None}
    if pid is None:
        return found
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        name, _, value = line.partition(":")
        field = {"VmRSS": "rss", "VmHWM": "rss_peak"}.get(name)
        if field is not None:
            found[field] = int(value.split()[0]) * 1024
    return found
