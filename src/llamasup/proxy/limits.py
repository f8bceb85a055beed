"""Per-model concurrency limits with a bounded wait queue (``concurrency``/``queue``).

A request beyond ``concurrency`` waits in a FIFO queue of at most ``queue`` requests; only a
request arriving at a full queue is refused (429). A slot is handed directly to the oldest
waiter, so a request arriving later never overtakes one already waiting.
"""

from __future__ import annotations

import asyncio
from collections import deque

from llamasup.profiles.types import ModelConfig
from llamasup.proxy.envelope import ProxyError


class Gate:
    """The limit of one model: at most ``limit`` at once, ``queue`` more waiting."""

    __slots__ = ("active", "limit", "model", "queue", "waiters")

    def __init__(self, model: str, limit: int, queue: int) -> None:
        self.model = model
        self.limit = limit
        self.queue = queue
        self.active = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.active < self.limit and not self.waiters:
            self.active += 1
            return
        if len(self.waiters) >= self.queue:
            raise ProxyError(
                429,
                "model_busy",
                f"model {self.model!r} is at its concurrency limit ({self.limit}) and its "
                f"queue is full ({self.queue} waiting); retry later",
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter  # release() handed us its slot (active already counts us)
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot arrived together with the cancellation: pass it on
            else:
                self.waiters.remove(waiter)
            raise

    def release(self) -> None:
        # a lowered limit takes effect as requests finish: nobody is woken above it
        if self.active <= self.limit and self._hand_over():
            return
        self.active -= 1

    def admit_waiters(self) -> None:
        """After the limit was raised, let waiters into the new slots."""
        while self.active < self.limit and self._hand_over():
            self.active += 1

    def _hand_over(self) -> bool:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False


class ConcurrencyGates:
    """Gates by model id; a profile reload that changes the numbers applies from then on."""

    def __init__(self) -> None:
        self._gates: dict[str, Gate] = {}

    def gate(self, model: ModelConfig) -> Gate | None:
        limit = model.concurrency
        if limit is None:
            return None
        gate = self._gates.get(model.id)
        if gate is None:
            gate = self._gates[model.id] = Gate(model.id, limit, model.queue)
        elif gate.limit != limit or gate.queue != model.queue:
            gate.limit, gate.queue = limit, model.queue
            gate.admit_waiters()
        return gate
