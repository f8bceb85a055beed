"""The bench's summary: per variant and cell, the median over repeats and the spread, and
ratios against the first variant; as a Markdown table (readable in a terminal, pasteable)."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llamasup.bench.measure import Cell
from llamasup.bench.runner import BenchPlan, cell_key
from llamasup.harness.records import ResultLog
from llamasup.harness.targets import Variant

#: cell metrics summarised (higher is better for rates, lower for times)
METRICS = (
    "prompt_tps",
    "gen_tps",
    "gen_tps_wall",
    "ttft",
    "latency",
    "throughput",
    "draft_acceptance",
)
#: the ratio columns: against the first variant, same cell
RATIOS = ("gen_tps", "throughput", "prompt_tps")

MIB = 1 << 20


@dataclass(frozen=True)
class Stat:
    """A median over repeats, with the lowest and highest value."""

    median: float
    low: float
    high: float
    count: int

    @property
    def spread(self) -> float:
        """Half the range, relative to the median (0.05: ±5 %)."""
        return 0.0 if self.median == 0 else (self.high - self.low) / 2 / abs(self.median)

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat | None:
        numbers = [float(v) for v in values if v is not None]
        if not numbers:
            return None
        return cls(statistics.median(numbers), min(numbers), max(numbers), len(numbers))

    def as_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "low": self.low, "high": self.high, "n": self.count}


@dataclass(frozen=True)
class Row:
    variant: Variant
    cell: Cell
    repeats: int
    load_seconds: Stat | None = None
    memory_estimate: int | None = None
    rss_peak: int | None = None
    metrics: Mapping[str, Stat | None] = field(default_factory=dict)
    ratios: Mapping[str, float | None] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant.as_dict(),
            "params": self.cell.as_dict(),
            "repeats": self.repeats,
            "load_seconds": None if self.load_seconds is None else self.load_seconds.as_dict(),
            "memory_estimate": self.memory_estimate,
            "rss_peak": self.rss_peak,
            "metrics": {k: None if v is None else v.as_dict() for k, v in self.metrics.items()},
            "ratios": dict(self.ratios),
            "error": self.error,
        }


def summarize(
    plan: BenchPlan, log: ResultLog, known: Mapping[Variant, Mapping[str, Any]]
) -> list[Row]:
    """One row per (variant, cell) of ``plan``, from the records in ``log``."""
    cells = {r["key"]: r for r in log.of_kind("cell")}
    rows: list[Row] = []
    for variant in plan.variants:
        identity = known[variant]
        loads = [r for r in log.of_kind("load") if r.get("identity") == identity]
        failures = [r for r in log.of_kind("variant-error") if r.get("identity") == identity]
        cell_errors = [r for r in log.of_kind("cell-error") if r.get("identity") == identity]
        found_for_variant = [
            cells[k]
            for cell in plan.cells
            for r in range(plan.repeat)
            if (k := cell_key(dict(identity), plan, cell, r)) in cells
        ]
        peaks = [int(r["rss_peak"]) for r in [*loads, *found_for_variant] if r.get("rss_peak")]
        estimates = [int(r["memory_estimate"]) for r in loads if r.get("memory_estimate")]
        for cell in plan.cells:
            found = [
                cells[k]
                for r in range(plan.repeat)
                if (k := cell_key(dict(identity), plan, cell, r)) in cells
            ]
            error = None
            if not found:
                same = [e for e in cell_errors if e.get("params") == cell.as_dict()]
                error = (same or failures or [{}])[-1].get("error") or "not measured"
            rows.append(
                Row(
                    variant,
                    cell,
                    len(found),
                    Stat.of(r.get("load_seconds") for r in loads),
                    estimates[-1] if estimates else None,
                    max(peaks) if peaks else None,
                    {m: Stat.of(r.get(m) for r in found) for m in METRICS},
                    error=error,
                )
            )
    return _with_ratios(rows, plan.variants[0] if plan.variants else None)


def _with_ratios(rows: Sequence[Row], first: Variant | None) -> list[Row]:
    baseline = {row.cell: row for row in rows if row.variant == first}
    out = []
    for row in rows:
        base = baseline.get(row.cell)
        ratios: dict[str, float | None] = {}
        for name in RATIOS:
            mine = row.metrics.get(name)
            theirs = base.metrics.get(name) if base is not None else None
            if mine is None or theirs is None or theirs.median <= 0:
                ratios[name] = None
            else:
                ratios[name] = mine.median / theirs.median
        out.append(dataclasses.replace(row, ratios=ratios))
    return out


HEADERS = (
    "variant",
    "prompt",
    "gen",
    "conc",
    "load s",
    "est MiB",
    "peak RSS MiB",
    "pp t/s",
    "tg t/s",
    "tg wall t/s",
    "TTFT ms",
    "e2e s",
    "agg t/s",
    "draft acc",
    "tg x",
    "agg x",
)


def markdown(rows: Sequence[Row]) -> str:
    """The summary table; values are medians, ``±`` half their range over repeats."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows:
        m = row.metrics
        if row.error is not None and row.repeats == 0:
            cells = [row.variant.name, *_params(row.cell), f"error: {row.error[:120]}"]
            cells += [""] * (len(HEADERS) - len(cells))
        else:
            cells = [
                row.variant.name,
                *_params(row.cell),
                _stat(row.load_seconds, 2),
                _mib(row.memory_estimate),
                _mib(row.rss_peak),
                _stat(m.get("prompt_tps"), 1),
                _stat(m.get("gen_tps"), 1),
                _stat(m.get("gen_tps_wall"), 1),
                _stat(m.get("ttft"), 0, scale=1000),
                _stat(m.get("latency"), 2),
                _stat(m.get("throughput"), 1),
                _stat(m.get("draft_acceptance"), 2),
                _ratio(row.ratios.get("gen_tps")),
                _ratio(row.ratios.get("throughput")),
            ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _params(cell: Cell) -> list[str]:
    return [str(cell.prompt_tokens), str(cell.gen_tokens), str(cell.concurrency)]


def _stat(stat: Stat | None, digits: int, *, scale: float = 1.0) -> str:
    if stat is None:
        return "-"
    text = f"{stat.median * scale:.{digits}f}"
    return text if stat.count < 2 else f"{text} ±{stat.spread * 100:.0f}%"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
