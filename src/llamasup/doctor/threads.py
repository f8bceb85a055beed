"""Doctor check: CPU-only sidecars that leave ``--threads`` to llama.cpp on a small host.

With ``-t`` unset llama.cpp runs one compute thread per core, and its OpenMP workers keep
spinning for several milliseconds after each request. On a host with few cores they hold
every core llamasup (or any front) needs to answer: ``bench/RESULTS.md`` (``## Threads on a
small CPU host``) measured +4-6 ms per short request on 2 cores, for every front; ``-t``
one below the core count removes it and halves the server's CPU per request, but costs
~25-30 % of generation speed there. A trade-off, so llamasup does not choose: it says so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from llamasup.doctor.devices import offload_request
from llamasup.doctor.result import CheckResult
from llamasup.errors import LlamasupError
from llamasup.profiles.types import Profiles
from llamasup.spec.resolve import resolve

#: at or below this many CPUs, llama.cpp's default thread count leaves the front no core
SMALL_HOST_CPUS = 4
_THREAD_ENV = "LLAMA_ARG_THREADS"


def host_cpus() -> int:
    """CPUs this process may run on (its affinity, else the count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def unset_threads(profiles: Profiles, model_ids: Sequence[str]) -> list[str]:
    """Models (of ``model_ids``) whose sidecar sets no ``--threads`` and asks for no GPU."""
    found = []
    for model_id in model_ids:
        try:
            spec = resolve(profiles, model_id, None).spec
        except LlamasupError:
            continue
        env: Mapping[str, str] = dict(spec.env)
        if "--threads" in spec.args or _THREAD_ENV in env:
            continue
        if offload_request(spec.args, env):
            continue
        found.append(model_id)
    return found


def check_threads(
    profiles: Profiles,
    model_ids: Sequence[str],
    *,
    gpu: bool,
    cpus: int | None = None,
    label: str = "threads",
) -> CheckResult:
    """Warn when CPU-only sidecars on a small host leave ``--threads`` to llama.cpp.

    ``gpu``: the binary lists a device it can offload to (then llama.cpp offloads layers by
    default and its CPU threads matter less: not checked).
    """
    count = host_cpus() if cpus is None else cpus
    if gpu:
        return CheckResult(label, "ok", "the binary offloads to a GPU; --threads left as set")
    if count > SMALL_HOST_CPUS:
        return CheckResult(label, "ok", f"{count} CPUs: llama.cpp's default leaves room")
    unset = unset_threads(profiles, model_ids)
    if not unset:
        return CheckResult(label, "ok", "every CPU-only model sets --threads")
    shown = ", ".join(unset[:5]) + (f" (+{len(unset) - 5} more)" if len(unset) > 5 else "")
    suggested = max(count - 1, 1)
    return CheckResult(
        label,
        "warn",
        f"{shown} run on the CPU with llama.cpp's default --threads on a {count}-CPU host: "
        "its workers spin on every core after each request, which adds milliseconds to "
        "every short request through any front",
        f"for short requests, add --threads {suggested} to server.base_args (or to these "
        "models' args); it costs generation speed (~25-30 % on 2 CPUs, bench/RESULTS.md)",
    )
