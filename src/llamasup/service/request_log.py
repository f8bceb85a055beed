"""One line per request: the request log (``server.request_log``: ``text``, ``json`` or ``off``).

It is a proxy observer like the metrics: called once when a request ends, on the request path,
so it formats one line and hands it to the ``llamasup.requests`` logger, nothing more.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from llamasup.proxy.hooks import RequestRecord

logger = logging.getLogger("llamasup.requests")

RequestLogMode = str  # "text" | "json" | "off"


class RequestLog:
    def __init__(self, mode: Callable[[], RequestLogMode]) -> None:
        #: read per request: a reload that changes it applies to the next request
        self._mode = mode

    def request_started(self, route: str, model: str, agent: str) -> None:
        return None

    def request_finished(self, record: RequestRecord) -> None:
        mode = self._mode()
        if mode == "off" or not logger.isEnabledFor(logging.INFO):
            return
        if mode == "json":
            logger.info("%s", json.dumps(as_dict(record), separators=(",", ":")))
            return
        model = record.model + (f"@{record.agent}" if record.agent else "") or "-"
        tokens = f"{_n(record.tokens_in)}->{_n(record.tokens_out)}"
        logger.info(
            "%s %s %d %.3fs wait %.3fs tokens %s sidecar %s%s",
            record.route, model, record.status, record.duration, record.wait, tokens,
            record.key or "-", f" error {record.error}" if record.error else "",
        )  # fmt: skip


def as_dict(record: RequestRecord) -> dict[str, object]:
    return {
        "route": record.route,
        "model": record.model,
        "agent": record.agent,
        "status": record.status,
        "duration": round(record.duration, 4),
        "ttfb": None if record.ttfb is None else round(record.ttfb, 4),
        "wait": round(record.wait, 4),
        "streamed": record.streamed,
        "tokens_in": record.tokens_in,
        "tokens_out": record.tokens_out,
        "sidecar": record.key,
        "error": record.error,
    }


def _n(count: int | None) -> str:
    return "-" if count is None else str(count)
