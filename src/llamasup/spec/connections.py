"""How many connections the proxy may hold open to one sidecar.

llama-server (cpp-httplib) serves each client connection on one thread of its pool for as
long as the connection stays open, kept-alive idle time included (up to 5 s). Its pool has
``n_threads_http`` fixed threads and may add short-lived ones, but a connection that arrives
while the fixed ones are held can still wait for a keep-alive to lapse: measured through
llamasup at 16 clients on ``-np 4``, 5.5 s for a few requests in every few hundred
(``bench/RESULTS.md``). So the proxy keeps at most the fixed pool open, less what llamasup's
own health probes and metrics scrapes may hold.

The fixed pool in b10001-b11434 (``init: using N threads for HTTP server`` at ``-lv 4``):
``--threads-http`` when set, else ``max(n_parallel + 4, cpus - 1)``, ``--parallel``'s default
(auto) being 4 slots. A ``command:`` sidecar is some other server: not capped.
"""

from __future__ import annotations

import os

from llamasup.spec.resolve import SidecarSpec

#: n_parallel when ``--parallel`` is unset or -1 (auto)
AUTO_PARALLEL = 4
#: connections left to llamasup itself: a health probe and a metrics scrape
RESERVED = 2


def http_threads(spec: SidecarSpec, cpus: int | None = None) -> int | None:
    """The size of the sidecar's fixed HTTP thread pool; None for a ``command:`` sidecar."""
    if spec.kind != "llama-server":
        return None
    env = dict(spec.env)
    threads = _int(spec.load_flags.value("--threads-http"), env.get("LLAMA_ARG_THREADS_HTTP"))
    if threads is not None and threads > 0:
        return threads
    parallel = _int(spec.load_flags.value("--parallel"), env.get("LLAMA_ARG_N_PARALLEL"))
    slots = parallel if parallel is not None and parallel > 0 else AUTO_PARALLEL
    count = cpus if cpus is not None else os.cpu_count() or 1
    return max(slots + 4, count - 1)


def max_connections(spec: SidecarSpec, cpus: int | None = None) -> int | None:
    """Connections the proxy may keep open to the sidecar (None: no cap)."""
    threads = http_threads(spec, cpus)
    return None if threads is None else max(1, threads - RESERVED)


def _int(*candidates: object) -> int | None:
    for value in candidates:
        if value is None:
            continue
        try:
            return int(str(value))
        except ValueError:
            return None
    return None
