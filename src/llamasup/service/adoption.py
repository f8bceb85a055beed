"""Taking over the sidecars the previous llamasup image handed over (a planned restart).

For every record of the hand-over file, ``handover.inspect`` decides, and then:

* ``adopt``: the key still resolves the same under the profiles now loaded: the reconciler
  takes the process on as it is (same pid, no reload); otherwise the process is stopped
  (``replaced``) and the reconciler starts what the profiles want now;
* ``unhealthy`` (ours, but no 200 with its key), ``orphaned`` (ours, not our child): stopped;
* ``gone``, ``foreign`` (the pid is another process now): left alone.

Only a file this very process wrote before its ``execve`` (same pid and start time) is acted
on in full. A file of a llamasup that died (a crash during a restart) is stale: its
descriptors mean nothing here and nothing is adopted; a process it names that is still alive
and the same is a leftover of ours and is killed. A file of another live llamasup (a second
one on this state directory) is left alone, file and processes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llamasup.reconcile.pool import Origin
from llamasup.reconcile.reconciler import Reconciler
from llamasup.service import handover_file
from llamasup.service.handover_file import Handover, SidecarRecord
from llamasup.sidecars.handover import Verdict, inspect
from llamasup.sidecars.procfs import start_time

logger = logging.getLogger("llamasup")

#: what became of a handed-over sidecar (the ``result`` label of the adoptions metric)
RESULTS = ("adopted", "replaced", "unhealthy", "orphaned", "gone", "foreign")


@dataclass(frozen=True)
class Outcome:
    key: str
    model: str
    pid: int
    result: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "model": self.model,
            "pid": self.pid,
            "result": self.result,
            "reason": self.reason,
        }


@dataclass
class AdoptionReport:
    """What one start made of a hand-over file (shown in status as the last restart)."""

    from_pid: int
    from_version: str
    #: a restart of this very process (``execve``), not a file left by a dead llamasup
    in_place: bool
    at: float
    requested_monotonic: float
    restarts: int
    outcomes: list[Outcome] = field(default_factory=list)
    #: seconds from the restart request to this process's first adoption decision
    exec_seconds: float | None = None
    #: seconds the checks and adoptions took
    adopt_seconds: float = 0.0
    #: ``time.monotonic()`` (one clock for the host) of each step: the request accepted, the
    #: hand-over written (the drain done, the exec next), this image adopting, serving
    handed_over_monotonic: float = 0.0
    adopting_monotonic: float = 0.0
    serving_monotonic: float | None = None

    def adopted_pids(self) -> frozenset[int]:
        return frozenset(o.pid for o in self.outcomes if o.result == "adopted")

    def count(self, result: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.result == result)

    def as_dict(self) -> dict[str, Any]:
        return {
            "from_pid": self.from_pid,
            "from_version": self.from_version,
            "in_place": self.in_place,
            "at": self.at,
            "restarts": self.restarts,
            "exec_seconds": None if self.exec_seconds is None else round(self.exec_seconds, 4),
            "adopt_seconds": round(self.adopt_seconds, 4),
            "timeline_ms": self.timeline_ms(),
            "monotonic": {
                "requested": self.requested_monotonic,
                "handed_over": self.handed_over_monotonic,
                "adopting": self.adopting_monotonic,
                "serving": self.serving_monotonic,
            },
            "sidecars": [outcome.as_dict() for outcome in self.outcomes],
        }

    def timeline_ms(self) -> dict[str, float | None] | None:
        """Milliseconds of each step of an in-place restart: ``drain`` (requests in flight
        finished, sidecars detached), ``start`` (the exec and this program's start-up, until
        it read the hand-over), ``adopt``, ``serve`` (until the front served again) and
        ``total`` (request to serving)."""
        if not self.in_place or not self.requested_monotonic or not self.handed_over_monotonic:
            return None

        def ms(start: float, end: float | None) -> float | None:
            return None if end is None else round((end - start) * 1000, 1)

        adopted = self.adopting_monotonic + self.adopt_seconds
        return {
            "drain": ms(self.requested_monotonic, self.handed_over_monotonic),
            "start": ms(self.handed_over_monotonic, self.adopting_monotonic),
            "adopt": round(self.adopt_seconds * 1000, 1),
            "serve": ms(adopted, self.serving_monotonic),
            "total": ms(self.requested_monotonic, self.serving_monotonic),
        }

    def summary(self) -> str:
        counts = [f"{self.count(r)} {r}" for r in RESULTS if self.count(r)]
        return ", ".join(counts) or "no sidecars"


class TakeOver:
    """One start's work on a hand-over file: ``run`` adopts, ``finish`` awaits the stops."""

    def __init__(self, reconciler: Reconciler, state_dir: Path) -> None:
        self._reconciler = reconciler
        self._state_dir = state_dir
        self._stops: list[asyncio.Task[None]] = []

    async def run(self, path: Path, handover: Handover) -> AdoptionReport | None:
        """Act on ``handover`` (read from ``path``); None when it belongs to another live
        llamasup and was left alone."""
        began = time.monotonic()
        in_place = handover_file.written_here(handover)
        if not in_place and start_time(handover.owner_pid) == handover.owner_start:
            logger.warning(
                "%s belongs to llamasup pid %d, which is running: another llamasup uses this "
                "state directory; its sidecars are left alone",
                path,
                handover.owner_pid,
            )
            return None
        report = AdoptionReport(
            from_pid=handover.owner_pid,
            from_version=handover.owner_version,
            in_place=in_place,
            at=time.time(),
            requested_monotonic=handover.requested_monotonic,
            restarts=handover.restarts if in_place else 0,
        )
        report.handed_over_monotonic = handover.written_monotonic
        report.adopting_monotonic = began
        if in_place and handover.requested_monotonic:
            report.exec_seconds = max(0.0, began - handover.requested_monotonic)
        same_dir = Path(handover.state_dir) == self._state_dir.absolute()
        records = list(handover.sidecars)
        if not in_place:
            # a dead llamasup's descriptors mean nothing in this process: never touch ours
            records = [
                replace(r, process=replace(r.process, pipes={}, partial={})) for r in records
            ]
        verdicts = await asyncio.gather(*(self._inspect(record) for record in records))
        decisions = [
            self._decide(record, verdict, reason, same_dir, handover)
            for record, (verdict, reason) in zip(records, verdicts, strict=True)
        ]
        report.outcomes = list(await asyncio.gather(*decisions))
        handover_file.remove(path)
        report.adopt_seconds = time.monotonic() - began
        return report

    async def finish(self) -> None:
        """Wait for the processes that were not adopted to be stopped (before anything new
        starts: their memory must be free first)."""
        if self._stops:
            await asyncio.gather(*self._stops, return_exceptions=True)
            self._stops.clear()

    async def _inspect(self, record: SidecarRecord) -> tuple[Verdict, str]:
        host = self._reconciler.supervisor.settings.host
        return await inspect(record.process, host=host, health_path=record.health_path)

    async def _decide(
        self,
        record: SidecarRecord,
        verdict: Verdict,
        reason: str,
        same_dir: bool,
        handover: Handover,
    ) -> Outcome:
        process = record.process

        def outcome(result: str, why: str) -> Outcome:
            log = logger.info if result == "adopted" else logger.warning
            log(
                "restart: %s (%s) pid %d %s: %s", record.model, record.key, process.pid, result, why
            )
            return Outcome(record.key, record.model, process.pid, result, why)

        if verdict in (Verdict.GONE, Verdict.FOREIGN):
            process.close_pipes()
            return outcome(str(verdict), reason)
        if verdict is Verdict.ORPHANED:
            self._dismiss(record, reason, child=False)
            return outcome("orphaned", f"{reason}: killed")
        if verdict is Verdict.UNHEALTHY:
            self._dismiss(record, reason)
            return outcome("unhealthy", f"{reason}: stopped")
        origin = Origin(record.model, record.agent, record.agent_flags)
        spec = self._reconciler.resolves_to(origin, record.key) if same_dir else None
        if spec is None:
            why = (
                f"the state directory changed (was {handover.state_dir})"
                if not same_dir
                else "its key is no longer what the profiles want"
            )
            self._dismiss(record, why)
            return outcome("replaced", f"{why}: stopped")
        try:
            await self._reconciler.adopt(
                spec,
                origin,
                process,
                adopted_from=handover.owner_pid,
                agents=record.agents,
                last_used=record.last_used,
            )
        except Exception as exc:
            logger.exception("adopting %s (%s) failed", record.model, record.key)
            self._dismiss(record, f"adopting failed: {exc}")
            return outcome("unhealthy", f"adopting failed: {exc}: stopped")
        return outcome("adopted", f"port {process.port}, ready since {process.ready_at}")

    def _dismiss(self, record: SidecarRecord, reason: str, *, child: bool = True) -> None:
        supervisor = self._reconciler.supervisor
        self._stops.append(
            asyncio.create_task(
                supervisor.dismiss(record.key, record.process, reason=reason, child=child),
                name=f"dismiss-{record.key}",
            )
        )
