"""What the reconciler did lately, for ``GET /api/status`` and the logs."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llamasup.planner.types import Plan, Refuse, Start, Stop, Wait


@dataclass(frozen=True)
class PassRecord:
    started: float  # wall clock
    duration: float  # seconds
    plan: Plan
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "duration_ms": round(self.duration * 1000, 3),
            "result": "error" if self.error else "ok",
            "error": self.error,
            "actions": [action_dict(a) for a in self.plan.actions],
            "summary": self.plan.summary(),
        }


def action_dict(action: Stop | Start | Wait | Refuse) -> dict[str, Any]:
    data: dict[str, Any] = {"action": type(action).__name__.lower(), "key": action.key}
    data["reason"] = action.reason
    if isinstance(action, Stop):
        data.update(drain=action.drain, in_flight=action.in_flight, detail=action.detail)
    elif isinstance(action, Start):
        data["detail"] = action.detail
    return data


class ReconcileStatus:
    """The last pass, the last pass that did something, and counters."""

    def __init__(self, history: int = 20) -> None:
        self.passes = 0
        self.last: PassRecord | None = None
        self.recent: deque[PassRecord] = deque(maxlen=history)
        #: told every pass (metrics); keep them quick, they run inside the pass
        self.listeners: list[Callable[[PassRecord], None]] = []

    def record(self, record: PassRecord) -> None:
        for listener in self.listeners:
            listener(record)
        self.passes += 1
        self.last = record
        if record.plan.actions or record.error:
            self.recent.append(record)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "last": None if self.last is None else self.last.as_dict(),
            "recent": [r.as_dict() for r in self.recent],
        }
