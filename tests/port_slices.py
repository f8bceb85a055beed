"""Private loopback port ranges for tests that start sidecars, safe under pytest-xdist.

A block of ports below the ephemeral range (where any client socket on the host may sit) is
cut into slices; each test takes the next slice, so a sidecar that is slow to exit in one
test cannot take a port another test expects. Parallel workers are separate processes with
their own counters, so worker ``w`` of ``n`` takes only the slices ``w, w + n, w + 2n, ...``:
no two workers ever hand out the same slice.
"""

from __future__ import annotations

import itertools
import os


def _worker() -> tuple[int, int]:
    """This process's xdist worker number and the number of workers (0 and 1 without xdist)."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return (int(name[2:]) if name.startswith("gw") else 0), max(count, 1)


class PortSlices:
    def __init__(self, first_port: int, slice_size: int, slices: int) -> None:
        worker, workers = _worker()
        owned = list(range(worker, slices, workers))
        if not owned:
            raise RuntimeError(
                f"{workers} xdist workers share {slices} port slices from {first_port}: "
                "run fewer workers"
            )
        self._first_port = first_port
        self._size = slice_size
        self._mine = itertools.cycle(owned)

    def next(self) -> tuple[int, int]:
        """The first and last port of the next slice of this worker."""
        first = self._first_port + next(self._mine) * self._size
        return first, first + self._size - 1
