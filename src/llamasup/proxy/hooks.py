"""Observation points of the proxy, for metrics (``service/metrics.py`` plugs in here).

The proxy calls a :class:`ProxyObserver` twice per forwarded request; with no observer set
it skips even taking the timestamps. Labels are bounded: ``model`` is the canonical model id
(never the alias or raw string the client sent), ``agent`` an agent name from the profiles or
``""``, ``route`` a fixed path from the route table (or ``"/upstream"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RequestRecord:
    route: str
    #: canonical model id, ``""`` if the request failed before it was resolved
    model: str
    agent: str
    #: HTTP status sent to the client; 499 if the client left before the response ended;
    #: 502 if the sidecar broke the response after its status went out (the client saw its
    #: 200, then a cut body or an ``upstream_disconnected`` error event)
    status: int
    #: seconds from the request's arrival to the end of its response
    duration: float
    #: seconds from arrival to the first response body byte sent; None if none was sent
    ttfb: float | None
    #: seconds spent waiting for a concurrency slot and a ready sidecar
    wait: float
    #: the response was an event stream
    streamed: bool
    #: llamasup error code when llamasup produced or ended the response with an error
    error: str | None
    #: whether :meth:`ProxyObserver.request_started` was called for this request
    started: bool
    #: the sidecar key that served it ("" if none did)
    key: str = ""
    #: prompt and generated tokens, as the sidecar reported them at the end of its answer
    tokens_in: int | None = None
    tokens_out: int | None = None


class ObserverFanOut:
    """Several observers as one (metrics and the request log)."""

    def __init__(self, *observers: ProxyObserver) -> None:
        self._observers = observers

    def request_started(self, route: str, model: str, agent: str) -> None:
        for observer in self._observers:
            observer.request_started(route, model, agent)

    def request_finished(self, record: RequestRecord) -> None:
        for observer in self._observers:
            observer.request_finished(record)


class ProxyObserver(Protocol):
    """Called inline on the request path: keep both methods fast and never raise."""

    def request_started(self, route: str, model: str, agent: str) -> None:
        """A request was resolved to ``model``/``agent`` and now counts as in flight."""

    def request_finished(self, record: RequestRecord) -> None:
        """Every request ends here once, started or not (``record.started`` says which)."""


# OpenAI's usage, Anthropic's, and llama-server's own timings (always in its last chunk)
_IN = re.compile(rb'"(?:prompt_tokens|input_tokens|prompt_n)"\s*:\s*(\d+)')
_OUT = re.compile(rb'"(?:completion_tokens|output_tokens|predicted_n)"\s*:\s*(\d+)')


def token_counts(tail: bytes) -> tuple[int | None, int | None]:
    """Prompt and generated tokens from the last chunk of an answer (None: not reported)."""
    found_in = _IN.findall(tail)
    found_out = _OUT.findall(tail)
    return (
        int(found_in[-1]) if found_in else None,
        int(found_out[-1]) if found_out else None,
    )
