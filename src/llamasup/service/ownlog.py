"""llamasup's own log lines, kept like a sidecar's: a bounded ring that readers can follow.

``GET /logs`` (llama-swap's "proxy" log) serves them beside the sidecars' output. Records may
be logged from worker threads (memory estimates run off the event loop); they are handed to
the loop's thread, where followers live.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from llamasup.sidecars.proclog import ProcessLog

RING_LINES = 2000
_FORMAT = "%(levelname)s %(name)s: %(message)s"


class OwnLog(logging.Handler):
    def __init__(self, ring_lines: int = RING_LINES) -> None:
        super().__init__(logging.INFO)
        self.log = ProcessLog(None, ring_lines=ring_lines)
        self.setFormatter(logging.Formatter(_FORMAT))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.get_ident()

    def install(self, logger: logging.Logger) -> None:
        """Start taking ``logger``'s records (call on the event loop's thread)."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._thread = threading.get_ident()
        logger.addHandler(self)

    def uninstall(self, logger: logging.Logger) -> None:
        logger.removeHandler(self)
        self.log.close()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - a logging handler must never raise into its caller
            self.handleError(record)
            return
        if threading.get_ident() == self._thread or self._loop is None:
            self.log.feed("stderr", data)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.log.feed, "stderr", data)
