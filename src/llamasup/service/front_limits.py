"""How much the front takes from its clients: connections, request heads, time.

Every client connection is a file descriptor, and a proxied request holds a second one (to
its sidecar) while it runs. When the process runs out of descriptors the kernel still
completes TCP handshakes, but ``accept()`` fails: nothing answers, not even ``/health``. So
llamasup raises its soft ``RLIMIT_NOFILE`` to the hard limit when it starts, and caps the
client connections it holds well below what the limit allows; connections past the cap
are answered ``503 too_many_connections`` and closed instead of starving everyone.

Connections that hold a descriptor without using it are closed by the client timeouts
(``server.client_timeouts``); request heads are bounded in size and header count because
the HTTP parser buffers a header until it ends.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

from llamasup.profiles.types import ServerConfig

logger = logging.getLogger(__name__)

#: the request line and headers of one request, as received, in bytes
MAX_HEAD_BYTES = 64 * 1024
#: header fields of one request
MAX_HEADERS = 100
#: descriptors kept for what is not a client connection (sidecar pipes and logs, the
#: profile watcher, health checks and metrics scrapes, profile files being applied)
FD_RESERVE = 128
#: the fewest connections a cap allows, however low the open files limit
_MIN_CONNECTIONS = 16
#: what to try for a soft limit when the hard one is unlimited (macOS caps it lower)
_UNLIMITED_TRIES = (1 << 20, 65536, 10240)


@dataclass(frozen=True, slots=True)
class FrontLimits:
    """What the front's HTTP protocol enforces on each client connection."""

    #: client connections open at once; the next ones are answered 503 and closed
    max_connections: int
    #: seconds a connection may stay idle between requests
    idle_timeout: float
    #: seconds a request head may take to arrive (from the connection or the request start)
    head_timeout: float
    max_head_bytes: int = MAX_HEAD_BYTES
    max_headers: int = MAX_HEADERS


def connections_allowed(open_files: int) -> int:
    """Client connections ``open_files`` descriptors can hold: each may need a second
    descriptor for its sidecar, and :data:`FD_RESERVE` stay for everything else."""
    return max(_MIN_CONNECTIONS, (open_files - FD_RESERVE) // 2)


def front_limits(server: ServerConfig, open_files: int) -> FrontLimits:
    """The limits ``server`` asks for, with ``max_connections`` lowered to what
    ``open_files`` descriptors allow (and set to that when the profile has none)."""
    allowed = connections_allowed(open_files)
    wanted = server.max_connections
    timeouts = server.client_timeouts
    return FrontLimits(
        max_connections=allowed if wanted is None else min(wanted, allowed),
        idle_timeout=timeouts.idle,
        head_timeout=timeouts.head,
    )


def open_files_limit() -> int:
    """The soft ``RLIMIT_NOFILE`` of this process (a large number when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _UNLIMITED_TRIES[0] if soft == resource.RLIM_INFINITY else soft


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; (before, after).

    systemd and most shells start services at a soft limit of 1024 with a much higher hard
    one: the soft limit is a default for programs that use select(), which llamasup does
    not. Sidecars inherit the raised limit (llama-server does not use select() either).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    tries = _UNLIMITED_TRIES if hard == resource.RLIM_INFINITY else (hard,)
    for target in tries:
        if soft != resource.RLIM_INFINITY and target <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        return soft, target
    return soft, soft


def log_open_files(before: int, after: int, limits: FrontLimits) -> None:
    if after > before:
        logger.info("open files limit raised from %d to %d (the hard limit)", before, after)
    else:
        logger.info("open files limit: %d (raise the hard limit, LimitNOFILE=, for more)", after)
    logger.info(
        "at most %d client connections (server.max_connections, and what %d open files allow)",
        limits.max_connections,
        after,
    )
