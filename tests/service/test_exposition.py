"""llamasup's own series are written as prometheus_client wrote them (it is the reference
here: the serving process no longer imports it for them).

Every series that ``Metrics`` defines is mirrored in a prometheus_client registry (same name,
help, labels, buckets), both get the same updates, and the two texts must be equal except for
the ``_created`` timestamps; the scrape-time gauge families likewise.
"""

from __future__ import annotations

import math
import random
import re
from types import SimpleNamespace
from typing import Any, cast

import prometheus_client
import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from llamasup.service import exposition
from llamasup.service.exposition import (
    Counter,
    Gauge,
    GaugeFamily,
    Histogram,
    Registry,
    go_float,
    render,
)
from llamasup.service.metrics import Metrics

LABEL_VALUES = ["alpha", "", 'quo"te', "back\\slash", "new\nline", "ünïcode", "/v1/chat"]
AMOUNTS = [1, 2, 0.5, 1e-9, 1e10, 123456789.0, 3]
OBSERVED = [0.0, 0.005, 0.0051, 0.1, 1, 2.5, 299.9, 300, 301, 1e6, -1.0, 0.0004]


def _metrics() -> Metrics:
    listeners = SimpleNamespace(listeners=[])
    reconciler = SimpleNamespace(status=listeners, stop_listeners=[])
    supervisor = SimpleNamespace(subscribe=lambda _callback: None)
    return Metrics(cast(Any, supervisor), cast(Any, reconciler), cast(Any, listeners))


def _series(registry: Registry) -> list[Counter | Gauge | Histogram]:
    return [c for c in registry.collectors if isinstance(c, (Counter, Gauge, Histogram))]


def _mirror(series: Counter | Gauge | Histogram, into: prometheus_client.CollectorRegistry) -> Any:
    common: dict[str, Any] = {"labelnames": series.labelnames, "registry": into}
    if isinstance(series, Counter):
        return prometheus_client.Counter(series.name, series.documentation, **common)
    if isinstance(series, Gauge):
        return prometheus_client.Gauge(series.name, series.documentation, **common)
    bounds = [b for b in series._bounds if b != math.inf]
    return prometheus_client.Histogram(series.name, series.documentation, buckets=bounds, **common)


def _untimed(text: str) -> str:
    """The text with the value of every ``_created`` sample replaced (a timestamp)."""
    return re.sub(r"^(\S+_created(?:\{.*\})?) \S+$", r"\1 T", text, flags=re.M)


def _update(ours: Any, theirs: Any, series: Any, rng: random.Random) -> None:
    values = tuple(rng.choice(LABEL_VALUES) for _ in series.labelnames)
    a = ours.labels(*values) if values else ours
    b = theirs.labels(*values) if values else theirs
    if isinstance(series, Histogram):
        amount = rng.choice(OBSERVED)
        a.observe(amount)
        b.observe(amount)
    elif isinstance(series, Counter):
        amount = rng.choice(AMOUNTS)
        a.inc(amount)
        b.inc(amount)
    else:
        way, amount = rng.choice(["inc", "dec", "set"]), rng.choice(AMOUNTS)
        getattr(a, way)(amount)
        getattr(b, way)(amount)


def test_there_is_one_of_each_kind() -> None:
    kinds = {type(series) for series in _series(_metrics().registry)}
    assert kinds == {Counter, Gauge, Histogram}


@pytest.mark.parametrize("seed", range(6))
def test_the_service_series_read_as_prometheus_client_wrote_them(seed: int) -> None:
    ours = _metrics().registry
    reference = prometheus_client.CollectorRegistry(auto_describe=True)
    pairs = [(series, _mirror(series, reference)) for series in _series(ours)]
    # untouched first: what a front that served nothing says
    untouched = render(_OwnOnly(ours)).decode()
    assert _untimed(untouched) == _untimed(prometheus_client.generate_latest(reference).decode())
    rng = random.Random(seed)
    for _ in range(400):
        series, mirror = rng.choice(pairs)
        _update(series, mirror, series, rng)
    text = render(_OwnOnly(ours)).decode()
    assert _untimed(text) == _untimed(prometheus_client.generate_latest(reference).decode())
    assert list(text_string_to_metric_families(text))  # and it parses


class _OwnOnly(Registry):
    """The series of a registry without its scrape-time collector (it needs a reconciler)."""

    def __init__(self, source: Registry) -> None:
        super().__init__()
        for series in _series(source):
            self.register(series)


def test_a_scrape_time_family_reads_as_prometheus_clients() -> None:
    ours = Registry()
    theirs = prometheus_client.CollectorRegistry(auto_describe=False)
    families: list[GaugeMetricFamily] = []
    for labels in [(), ("model",), ("model", "state")]:
        name = f"llamasup_family_{len(labels)}"
        mine = GaugeFamily(name, "Help with a \\ and a\nnewline", labels=labels)
        reference = GaugeMetricFamily(name, "Help with a \\ and a\nnewline", labels=labels)
        for index, value in enumerate([0, 1.5, 1e12, -3]):
            values = [f"{v}{index}" for v in LABEL_VALUES[: len(labels)]]
            mine.add_metric(values, value)
            reference.add_metric(values, value)
        ours.register(_Fixed([mine]))
        families.append(reference)
    theirs.register(_TheirFixed(families))
    assert render(ours) == prometheus_client.generate_latest(theirs)


class _Fixed:
    def __init__(self, families: list[GaugeFamily]) -> None:
        self._families = families

    def collect(self) -> list[GaugeFamily]:
        return self._families


class _TheirFixed(Collector):
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self._families = families

    def collect(self) -> list[GaugeMetricFamily]:
        return self._families


@pytest.mark.parametrize(
    "value", [0, 1, -1, 0.1, 1e-9, 1e6, 1234567.0, 1.5e9, 1.796e9, 1e21, math.inf, -math.inf]
)
def test_values_are_written_as_go_writes_them(value: float) -> None:
    from prometheus_client.utils import floatToGoString  # noqa: PLC0415

    assert go_float(value) == floatToGoString(value)  # type: ignore[no-untyped-call]
    assert go_float(math.nan) == "NaN"


def test_sample_values_of_a_registry() -> None:
    registry = Registry()
    requests = Counter("llamasup_x", "X", ("a",), registry=registry)
    requests.labels("1").inc()
    assert registry.get_sample_value("llamasup_x_total", {"a": "1"}) == 1
    assert registry.get_sample_value("llamasup_x_total", {"a": "2"}) is None
    with pytest.raises(ValueError, match="expected labels"):
        requests.labels("1", "2")


def test_the_content_type_is_prometheus_clients() -> None:
    assert exposition.CONTENT_TYPE == prometheus_client.exposition.CONTENT_TYPE_LATEST
