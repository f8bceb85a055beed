"""The restart policy for sidecars that fail while still desired: pure decisions, no I/O.

Exponential backoff with jitter between attempts, and a start limit: ``start_limit``
failures within ``start_window`` seconds and the sidecar is given up on until an operator
resets it or its spec changes (which makes a new key, hence a fresh tracker). Time and
randomness come in as arguments so tests can pin both.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from llamasup.core import defaults


@dataclass(frozen=True)
class RestartPolicy:
    backoff_initial: float = defaults.RESTART_BACKOFF
    backoff_factor: float = 2.0
    backoff_max: float = defaults.RESTART_BACKOFF_MAX
    #: each delay is scaled by a factor drawn from [1 - jitter, 1 + jitter]
    jitter: float = 0.2
    start_limit: int = defaults.RESTART_MAX_FAILURES
    start_window: float = defaults.RESTART_WINDOW

    def __post_init__(self) -> None:
        if self.backoff_initial < 0 or self.backoff_max < self.backoff_initial:
            raise ValueError("RestartPolicy: need 0 <= backoff_initial <= backoff_max")
        if self.backoff_factor < 1:
            raise ValueError("RestartPolicy: backoff_factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("RestartPolicy: jitter must be within [0, 1]")
        if self.start_limit < 1 or self.start_window <= 0:
            raise ValueError("RestartPolicy: start_limit must be >= 1 and start_window > 0")

    def delay(self, failures: int, sample: float) -> float:
        """Backoff before the attempt after the ``failures``-th failure; ``sample`` in [0, 1)."""
        base = min(
            self.backoff_max, self.backoff_initial * self.backoff_factor ** max(0, failures - 1)
        )
        return max(0.0, base * (1.0 + self.jitter * (2.0 * sample - 1.0)))


@dataclass(frozen=True)
class RestartDecision:
    """What to do after a failure: retry after ``delay`` seconds, or give up."""

    failures: int
    give_up: bool
    delay: float


class RestartTracker:
    """The failure history of one sidecar key."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._failures: deque[float] = deque()
        self.gave_up = False
        #: monotonic time before which no new start may begin
        self.retry_at: float | None = None
        self.last_failure: str | None = None

    def failures(self, now: float) -> int:
        self._forget(now)
        return len(self._failures)

    def record_failure(self, now: float, sample: float, reason: str) -> RestartDecision:
        self._forget(now)
        self._failures.append(now)
        self.last_failure = reason
        count = len(self._failures)
        if count >= self.policy.start_limit:
            self.gave_up = True
            self.retry_at = None
            return RestartDecision(count, True, 0.0)
        delay = self.policy.delay(count, sample)
        self.retry_at = now + delay
        return RestartDecision(count, False, delay)

    def wait_before_start(self, now: float) -> float:
        """Seconds a start must still wait for the backoff (0 when it may go now)."""
        if self.retry_at is None:
            return 0.0
        return max(0.0, self.retry_at - now)

    def reset(self) -> None:
        self._failures.clear()
        self.gave_up = False
        self.retry_at = None
        self.last_failure = None

    def _forget(self, now: float) -> None:
        horizon = now - self.policy.start_window
        while self._failures and self._failures[0] <= horizon:
            self._failures.popleft()
