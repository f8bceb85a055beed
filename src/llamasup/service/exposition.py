"""llamasup's own metric series (counters, gauges, histograms) and their Prometheus text.

prometheus_client stayed resident in every serving process (~3.3 MB of the idle front's
memory, with http.server, urllib.request, email and wsgiref) for a few counters. These keep the
same series and write the same text as its ``generate_latest`` for them: counters as
``NAME_total`` with a ``NAME_created`` gauge after the family, histograms as cumulative
``NAME_bucket`` (``le`` among the labels), ``NAME_count``, ``NAME_sum`` and ``NAME_created``,
labels in name order, values as Go formats floats. ``tests/service/test_exposition.py``
holds the text to prometheus_client's for the same events; the sidecars' own series are parsed
and re-exposed by prometheus_client, imported at the first scrape that has any
(``sidecar_metrics.py``).

Updated from the event loop only (the proxy's observer, the supervisor's and reconciler's
events), so there is no lock: an update is a dictionary lookup and an addition.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"

LabelPairs = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One metric family as exposed: name (without ``_total``), help, type and samples."""

    name: str
    documentation: str
    type: str
    samples: list[tuple[str, LabelPairs, float]] = field(default_factory=list)


class Collector(Protocol):
    def collect(self) -> Iterable[Family]: ...


class Registry:
    """The series of one ``/metrics`` answer, in the order they were registered."""

    def __init__(self) -> None:
        self._collectors: list[Collector] = []

    def register(self, collector: Collector) -> None:
        self._collectors.append(collector)

    @property
    def collectors(self) -> tuple[Collector, ...]:
        return tuple(self._collectors)

    def collect(self) -> Iterator[Family]:
        for collector in self._collectors:
            yield from collector.collect()

    def get_sample_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """The value of sample ``name`` with exactly ``labels``; None if there is none."""
        wanted = tuple(sorted((labels or {}).items()))
        for family in self.collect():
            for sample, pairs, value in family.samples:
                if sample == name and tuple(sorted(pairs)) == wanted:
                    return value
        return None


def go_float(value: float) -> str:
    """A sample value as Prometheus's Go code writes it (``1.0``, ``+Inf``, ``1.7e+09``)."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go turns to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _escape(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _line(name: str, labels: LabelPairs, value: float) -> str:
    if not labels:
        return f"{name} {go_float(value)}\n"
    shown = ",".join(f'{key}="{_escape(text)}"' for key, text in sorted(labels))
    return f"{name}{{{shown}}} {go_float(value)}\n"


def render(registry: Registry) -> bytes:
    """The Prometheus text exposition of every family of ``registry``."""
    out: list[str] = []
    for family in registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        documentation = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {documentation}\n# TYPE {name} {family.type}\n")
        created = f"{family.name}_created"
        later: list[str] = []
        for sample, labels, value in family.samples:
            (later if sample == created else out).append(_line(sample, labels, value))
        if later:
            out.append(f"# HELP {created} {documentation}\n# TYPE {created} gauge\n")
            out.extend(later)
    return "".join(out).encode()


class _Series:
    """A named series with label names, registered at creation."""

    kind = ""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: Registry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        registry.register(self)

    def _pairs(self, values: tuple[str, ...]) -> LabelPairs:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        return tuple(zip(self.labelnames, values, strict=True))

    def collect(self) -> Iterator[Family]:
        family = Family(self.name, self.documentation, self.kind)
        self._samples(family.samples)
        yield family

    def _samples(self, into: list[tuple[str, LabelPairs, float]]) -> None:
        raise NotImplementedError


class _Value:
    __slots__ = ("created", "pairs", "value")

    def __init__(self, pairs: LabelPairs) -> None:
        self.pairs = pairs
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)


class _Counted(_Series):
    """A series of plain values per label set: a counter or a gauge."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: Registry,
    ) -> None:
        super().__init__(name, documentation, labelnames, registry)
        self._children: dict[tuple[str, ...], _Value] = {}
        if not self.labelnames:
            self._children[()] = _Value(())

    def labels(self, *values: str) -> _Value:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Value(self._pairs(values))
        return child

    def inc(self, amount: float = 1.0) -> None:
        self._children[()].inc(amount)


class Counter(_Counted):
    kind = "counter"

    def _samples(self, into: list[tuple[str, LabelPairs, float]]) -> None:
        children = list(self._children.values())
        into.extend((f"{self.name}_total", child.pairs, child.value) for child in children)
        into.extend((f"{self.name}_created", child.pairs, child.created) for child in children)


class Gauge(_Counted):
    kind = "gauge"

    def dec(self, amount: float = 1.0) -> None:
        self._children[()].dec(amount)

    def set(self, value: float) -> None:
        self._children[()].set(value)

    def _samples(self, into: list[tuple[str, LabelPairs, float]]) -> None:
        into.extend((self.name, child.pairs, child.value) for child in self._children.values())


class _Buckets:
    __slots__ = ("counts", "created", "pairs", "sum")

    def __init__(self, pairs: LabelPairs, size: int) -> None:
        self.pairs = pairs
        self.counts = [0] * size
        self.sum = 0.0
        self.created = time.time()


class _HistogramChild:
    __slots__ = ("_bounds", "_buckets")

    def __init__(self, bounds: list[float], buckets: _Buckets) -> None:
        self._bounds = bounds
        self._buckets = buckets

    def observe(self, value: float) -> None:
        buckets = self._buckets
        buckets.sum += value
        buckets.counts[bisect.bisect_left(self._bounds, value)] += 1


class Histogram(_Series):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: Registry,
    ) -> None:
        super().__init__(name, documentation, labelnames, registry)
        self._bounds = sorted(float(bound) for bound in buckets)
        if self._bounds[-1] != math.inf:
            self._bounds.append(math.inf)
        self._le = [go_float(bound) for bound in self._bounds]
        self._children: dict[tuple[str, ...], _HistogramChild] = {}
        if not self.labelnames:
            self.labels()

    def labels(self, *values: str) -> _HistogramChild:
        child = self._children.get(values)
        if child is None:
            buckets = _Buckets(self._pairs(values), len(self._bounds))
            child = self._children[values] = _HistogramChild(self._bounds, buckets)
        return child

    def observe(self, value: float) -> None:
        self._children[()].observe(value)

    def _samples(self, into: list[tuple[str, LabelPairs, float]]) -> None:
        name = self.name
        states = [child._buckets for child in self._children.values()]
        for state in states:
            total = 0
            for le, count in zip(self._le, state.counts, strict=True):
                total += count
                into.append((f"{name}_bucket", (*state.pairs, ("le", le)), total))
            into.append((f"{name}_count", state.pairs, total))
            into.append((f"{name}_sum", state.pairs, state.sum))
        into.extend((f"{name}_created", state.pairs, state.created) for state in states)


class GaugeFamily(Family):
    """A gauge family made at scrape time (what is true now)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, "gauge")
        self._labelnames = tuple(labels)

    def add_metric(self, values: Sequence[str], value: float) -> None:
        pairs = tuple(zip(self._labelnames, values, strict=True))
        self.samples.append((self.name, pairs, float(value)))
