"""The sidecars' own ``/metrics`` (llama-server's ``llamacpp:*`` series), re-exposed with
``model`` and ``sidecar`` labels: parsed and written by prometheus_client, which only a scrape
that finds a ready sidecar imports (``metrics.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample


def reexpose(sources: Iterable[tuple[str, str, str]]) -> bytes:
    """The text of every (model, sidecar key, exposition text), families merged by name."""
    merged = merge_families(sources)
    if not merged:
        return b""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Static(merged))
    return generate_latest(registry)


class _Static(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def merge_families(sources: Iterable[tuple[str, str, str]]) -> list[Metric]:
    """Parse each (model, sidecar key, exposition text) and merge families by name, adding
    ``model`` and ``sidecar`` labels to every sample. Unparseable text is skipped."""
    families: dict[str, Metric] = {}
    for model, key, text in sources:
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError:
            continue
        for family in parsed:
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                labels = {**sample.labels, "model": model, "sidecar": key}
                merged.samples.append(
                    Sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
                )
    return list(families.values())
