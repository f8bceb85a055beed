"""OS processes: spawn, logs, ports, probes, ``Sidecar`` and ``Supervisor``."""
