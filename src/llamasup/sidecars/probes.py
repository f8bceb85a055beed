"""Watching a run over HTTP: until it is ready (or proves it never will), then while ready.

Readiness of a llama-server is learned from its own output: it prints its ready line
(``model loaded``) right after ``/health`` turns 200, so the start waits for that line and
then asks ``/health`` once to confirm. Until the line, a slow poll (every ``ready_poll_max``)
is the fallback for a build or a wrapper script that prints something else; nothing polls a
loading server every few milliseconds. A ``command:`` sidecar prints nothing we know: its
poll starts at ``ready_poll_min`` and backs off for long loads. Either way other readiness
hints (``listening on``) and the exit wake the loop at once.

A 200 is trusted only from a child that is still alive, has not reported a bind failure,
and either printed a readiness marker or has been running for ``BIND_SETTLE`` seconds:
otherwise a foreign server that won the race for our port could pass for ours in the ~10 ms
before the child reports it could not bind.

Liveness: a health probe every ``health_interval``; the exit is noticed at once, and
``unhealthy_threshold`` failed probes in a row end the watch. The sidecar decides what to
do with either outcome.
"""

from __future__ import annotations

import asyncio
import time

from llamasup.errors import SidecarStartError, SidecarTimeoutError
from llamasup.sidecars.health import http_status
from llamasup.sidecars.proclog import ProcessLog
from llamasup.sidecars.run import Run, wait_event
from llamasup.sidecars.types import SidecarSettings

#: how long after spawn a 200 without a readiness marker is believed (see module docstring)
BIND_SETTLE = 0.2


class BindFailed(Exception):
    """The child could not bind its port: the caller retries on another one."""


async def wait_until_ready(
    run: Run,
    *,
    model: str,
    health_path: str,
    settings: SidecarSettings,
    log: ProcessLog,
    ready_line: bool = True,
) -> None:
    """Return when ``run`` answers 200 on ``health_path``; with ``ready_line`` (a
    llama-server), probe when it printed its ready line, and only slowly before.

    Raises BindFailed, SidecarStartError (the child exited), or SidecarTimeoutError (no
    output for ``settings.load_timeout`` seconds). The caller ends the run on any error.
    """
    interval = settings.ready_poll_min
    unproven_200 = False
    #: while waiting for the ready line: when the fallback poll probes next (None: polling)
    hold: float | None = run.started + settings.ready_poll_max if ready_line else None
    while True:
        if unproven_200 and _trusted(run):
            return  # the 200 we had is the child's after all: no need to ask again
        if run.bind_failed:
            raise BindFailed
        if run.exited.is_set():
            raise SidecarStartError(
                f"{model}: exited with code {run.returncode} while starting; "
                f"last output: {log.last_child_line() or '(none)'}",
                run.returncode,
                log.tail(settings.log_tail_lines),
            )
        silent_for = time.monotonic() - max(log.last_output, run.started)
        if silent_for >= settings.load_timeout:
            raise SidecarTimeoutError(
                f"{model}: no progress for {silent_for:.1f}s while loading "
                f"(load timeout {settings.load_timeout:g}s); last output: "
                + " | ".join(log.tail(3))
            )
        if hold is not None and run.ready_line_seen:
            hold = None  # the one confirming probe, now; a fast poll if it is not yet 200
            interval = settings.ready_poll_min
        if hold is not None and not run.wake.is_set():
            now = time.monotonic()
            if now < hold:
                await wait_event(run.wake, min(hold - now, settings.load_timeout - silent_for))
                continue
            hold = now + settings.ready_poll_max
        run.wake.clear()
        code = await _probe_unless_doomed(run, health_path, settings)
        if code == 200 and _trusted(run):
            return
        unproven_200 = code == 200
        if hold is not None:
            continue  # back to waiting for the line (or the next fallback probe)
        if run.wake.is_set():
            interval = settings.ready_poll_min
            continue
        wait = min(interval, settings.load_timeout - silent_for)
        if unproven_200:  # ours, most likely, but not yet proven: re-check when it is
            wait = min(wait, BIND_SETTLE - (time.monotonic() - run.started))
        await wait_event(run.wake, max(0.0, wait))
        interval = min(interval * 1.5, settings.ready_poll_max)


def _trusted(run: Run) -> bool:
    if run.exited.is_set() or run.bind_failed:
        return False
    return run.ready_marker_seen or time.monotonic() - run.started >= BIND_SETTLE


async def watch_health(run: Run, *, health_path: str, settings: SidecarSettings) -> int:
    """Return when the ready ``run`` exits (0) or fails N health checks in a row (N)."""
    failures = 0
    while True:
        if await wait_event(run.exited, settings.health_interval):
            return 0
        code = await http_status(
            settings.host, run.port, health_path, limit=settings.health_timeout
        )
        if code == 200:
            failures = 0
            continue
        failures += 1
        run.log.note(f"health check failed ({code or 'no answer'}), {failures} in a row")
        if failures >= settings.unhealthy_threshold:
            return failures


async def _probe_unless_doomed(run: Run, health_path: str, settings: SidecarSettings) -> int | None:
    """One probe, abandoned if the child exits or fails to bind meanwhile.

    A probe can hang on a listener that never answers (someone else holds the port); that
    must not delay noticing the exit. A readiness marker does not abandon the probe: the
    probe in flight is then the likeliest to see the first 200.
    """
    probe = asyncio.ensure_future(
        http_status(settings.host, run.port, health_path, limit=settings.probe_timeout)
    )
    doomed = asyncio.ensure_future(run.doomed.wait())
    try:
        await asyncio.wait((probe, doomed), return_when=asyncio.FIRST_COMPLETED)
    finally:
        doomed.cancel()
        if not probe.done():
            probe.cancel()
    if probe.done() and not probe.cancelled():
        return probe.result()
    return None
