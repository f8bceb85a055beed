"""Defaults shared by the profile format, the sidecars and the restart policy: one place.

The profile's ``server`` section, ``SidecarSettings`` and ``RestartPolicy`` all start from these
numbers, and the README's tables state them; a default changed here changes everywhere.
Durations are seconds.
"""

from __future__ import annotations

LISTEN_HOST = "127.0.0.1"
LISTEN_PORT = 8402
#: sidecar ports, always bound to loopback
PORTS = (8500, 8599)
#: a loading sidecar whose log shows no progress for this long is stopped
HEALTH_TIMEOUT = 60.0
#: health check period of a ready sidecar
HEALTH_INTERVAL = 30.0
#: consecutive failed checks before a ready sidecar counts as unhealthy
UNHEALTHY_AFTER = 3
#: SIGTERM -> SIGKILL delay, and the bound on draining in-flight requests before a stop
STOP_GRACE = 10.0
#: how long a request waits for its sidecar to become ready
START_TIMEOUT = 300.0
#: restart policy: first backoff, its ceiling, failures allowed within the window
RESTART_BACKOFF = 1.0
RESTART_BACKOFF_MAX = 60.0
RESTART_MAX_FAILURES = 5
RESTART_WINDOW = 300.0
#: scheduling under contention: a waiting demand may drain busy sidecars after this long
MAX_WAIT = 3.0
#: a request's ``keep_alive`` is clamped to this
MAX_KEEP_ALIVE = 3600.0
#: the front closes a client connection idle between requests after this long
CLIENT_IDLE_TIMEOUT = 5.0
#: ... one whose request head (request line and headers) is not complete after this long
CLIENT_HEAD_TIMEOUT = 10.0
#: ... and answers 408 to a request whose body sends nothing for this long
CLIENT_BODY_TIMEOUT = 30.0
