"""``PortAllocator``: hands out loopback ports to sidecars, shared by all of them.

A port is handed out only if no other sidecar holds it and a bind probe on the host succeeds.
The probe is only a hint (another program may take the port before the child binds it), so
the sidecar also retries on a fresh port when the child reports it could not bind.

The search is round-robin from just after the last port handed out, so a port that was just
released (and may still belong to a dying process) is the last one to be reused.
"""

from __future__ import annotations

import socket
import sys

MIN_PORT = 1
MAX_PORT = 65535


class PortsExhaustedError(OSError):
    """Every port of the range is held by a sidecar or in use by something else."""


def validate_port_range(first: int, last: int) -> None:
    """Refuse ranges llama-server would not honour (``--port 70000`` silently binds elsewhere)."""
    if not (MIN_PORT <= first <= last <= MAX_PORT):
        raise ValueError(
            f"port range {first}-{last} is invalid: need {MIN_PORT} <= first <= last <= {MAX_PORT}"
        )


def port_is_free(host: str, port: int) -> bool:
    """Can a server bind ``host:port`` right now?

    Uses the socket options llama-server itself uses (``SO_REUSEADDR`` on POSIX), so a port
    lingering in TIME_WAIT counts as free, exactly as it is for the child.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if sys.platform != "win32":
            # on Windows SO_REUSEADDR would let us bind over a live listener; skip it there
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class PortAllocator:
    """Ports of one range, shared by every sidecar of a supervisor.

    Not thread-safe: like the sidecars, it lives on the event-loop thread.
    """

    def __init__(self, first: int, last: int, *, host: str = "127.0.0.1") -> None:
        validate_port_range(first, last)
        self.first = first
        self.last = last
        self.host = host
        self._held: set[int] = set()
        self._next = first

    @property
    def held(self) -> frozenset[int]:
        return frozenset(self._held)

    def acquire(self, *, avoid: frozenset[int] = frozenset()) -> int:
        """Reserve a free port; ``avoid`` lists ports that just failed for this caller."""
        size = self.last - self.first + 1
        for offset in range(size):
            port = self.first + (self._next - self.first + offset) % size
            if port in self._held or port in avoid:
                continue
            if not self.is_free(port):
                continue
            self._held.add(port)
            self._next = port + 1 if port < self.last else self.first
            return port
        raise PortsExhaustedError(
            f"no free port in {self.first}-{self.last} on {self.host} "
            f"({len(self._held)} held by sidecars)"
        )

    def is_free(self, port: int) -> bool:
        """The bind probe; a seam for tests that need to simulate losing the race."""
        return port_is_free(self.host, port)

    def hold(self, port: int) -> None:
        """Count ``port`` as held: an adopted sidecar listens there already (it may lie
        outside the range if the range changed across the restart)."""
        self._held.add(port)

    def release(self, port: int) -> None:
        self._held.discard(port)
