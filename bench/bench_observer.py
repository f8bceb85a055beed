"""Hot-path cost of the proxy's metrics observer: one ``request_started`` + ``request_finished``
(a counter, three histograms, a gauge up and down), with llamasup's own series
(``service/exposition.py``) against the same series in prometheus_client (the observer as it
was before issue #20's idle-memory work), interleaved round by round in one process.

Usage: ``python bench/bench_observer.py [--rounds 15] [--calls 20000]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import prometheus_client

from llamasup.proxy.hooks import RequestRecord
from llamasup.service.exposition import Registry
from llamasup.service.metrics import _LATENCY_BUCKETS, RequestObserver


class PrometheusObserver:
    """The observer as it was: the same series in a prometheus_client registry."""

    def __init__(self) -> None:
        registry = prometheus_client.CollectorRegistry(auto_describe=True)
        labels = ("model", "agent", "route")
        kw: dict[str, Any] = {"registry": registry}
        self.requests = prometheus_client.Counter("r", "r", (*labels, "status"), **kw)
        self.latency = prometheus_client.Histogram("l", "l", labels, buckets=_LATENCY_BUCKETS, **kw)
        self.ttfb = prometheus_client.Histogram("t", "t", labels, buckets=_LATENCY_BUCKETS, **kw)
        self.wait = prometheus_client.Histogram("w", "w", labels, buckets=_LATENCY_BUCKETS, **kw)
        self.in_flight = prometheus_client.Gauge("f", "f", ("model", "agent"), **kw)

    def request_started(self, route: str, model: str, agent: str) -> None:
        self.in_flight.labels(model, agent).inc()

    def request_finished(self, record: RequestRecord) -> None:
        if record.started:
            self.in_flight.labels(record.model, record.agent).dec()
        labels = (record.model, record.agent, record.route)
        self.requests.labels(*labels, str(record.status)).inc()
        self.latency.labels(*labels).observe(record.duration)
        if record.ttfb is not None:
            self.ttfb.labels(*labels).observe(record.ttfb)
        if record.started:
            self.wait.labels(*labels).observe(record.wait)


def per_call_us(observer: Any, calls: int) -> float:
    route = "/v1/chat/completions"
    records = [
        RequestRecord(
            route, f"model{i % 3}", "", 200, 0.05 * (i % 40), 0.01, 0.001, True, None, True
        )
        for i in range(64)
    ]
    start = time.perf_counter()
    for i in range(calls):
        record = records[i & 63]
        observer.request_started(record.route, record.model, record.agent)
        observer.request_finished(record)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    ways: dict[str, Any] = {
        "prometheus_client (before)": PrometheusObserver(),
        "own (after)": RequestObserver(Registry()),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
    for _ in range(args.rounds):
        for name, observer in ways.items():
            times[name].append(per_call_us(observer, args.calls))
    print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")
    base = statistics.median(times["prometheus_client (before)"])
    print(
        "\n| observer | per request (median) | min | ratio to before |\n| --- | --- | --- | --- |"
    )
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} µs | {min(values):.2f} µs | {median / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
