"""Single profile values, parsed: addresses, port ranges, paths, durations and the small
settings blocks of ``server`` (restart, scheduling, client timeouts)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llamasup.core.units import parse_duration
from llamasup.profiles.types import ClientTimeouts, RestartConfig, SchedulingConfig


def ttl_value(raw: Any) -> float | None:
    seconds = parse_duration(raw)
    return None if seconds == 0 else seconds


def resolve_path(value: str, directory: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (directory / path).resolve()


def binary_value(value: str, directory: Path) -> str:
    """A bare name is looked up on PATH at spawn time; anything with a slash is a path."""
    if "/" in value or value.startswith("~"):
        return str(resolve_path(value, directory))
    return value


def restart_config(raw: Mapping[str, Any]) -> RestartConfig:
    defaults = RestartConfig()
    return RestartConfig(
        backoff=parse_duration(raw.get("backoff", defaults.backoff)),
        backoff_max=parse_duration(raw.get("backoff_max", defaults.backoff_max)),
        max_failures=int(raw.get("max_failures", defaults.max_failures)),
        window=parse_duration(raw.get("window", defaults.window)),
    )


def scheduling_config(raw: Mapping[str, Any]) -> SchedulingConfig:
    defaults = SchedulingConfig()

    def optional(name: str, default: float | None) -> float | None:
        if name not in raw:
            return default
        value = raw[name]
        return None if value is None or value == "never" else parse_duration(value)

    min_resident = raw.get("min_resident", "auto")
    return SchedulingConfig(
        max_wait=optional("max_wait", defaults.max_wait),
        min_resident=None if min_resident == "auto" else parse_duration(min_resident),
        aging=optional("aging", defaults.aging),
        max_keep_alive=parse_duration(raw.get("max_keep_alive", defaults.max_keep_alive)),
    )


def client_timeouts(raw: Mapping[str, Any]) -> ClientTimeouts:
    defaults = ClientTimeouts()
    seconds: dict[str, float] = {}
    for name in ("idle", "head", "body"):
        value = parse_duration(raw.get(name, getattr(defaults, name)))
        if value <= 0:
            raise ValueError(f"client_timeouts.{name} must be more than 0")
        seconds[name] = value
    return ClientTimeouts(**seconds)


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1-65535")
    return host, port


def parse_port_range(text: str) -> tuple[int, int]:
    low_text, _, high_text = text.partition("-")
    low, high = int(low_text), int(high_text)
    for port in (low, high):
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is outside 1-65535")
    if low > high:
        raise ValueError(f"port range {low}-{high} is empty (start above end)")
    return low, high
