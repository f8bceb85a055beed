"""``server.memory_budget`` and a model's ``memory``: one size, or a size per device."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llamasup.core.units import parse_size


def memory_budget(raw: Any) -> dict[str, Any]:
    """ServerConfig fields from the YAML value: ``memory_budget`` or ``device_budgets``.

    A mapping's names are taken as given; ``doctor`` checks them against the binary's
    ``--list-devices``.
    """
    if isinstance(raw, Mapping):
        return {"memory_budget": None, "device_budgets": per_device(raw)}
    return {"memory_budget": None if raw is None else parse_size(raw), "device_budgets": ()}


def declared_memory(raw: Any) -> tuple[int | None, tuple[tuple[str, int], ...]]:
    """A model's ``memory``: (bytes in all, bytes per device when given as a mapping)."""
    if raw is None:
        return None, ()
    if isinstance(raw, Mapping):
        devices = per_device(raw)
        return sum(size for _, size in devices), devices
    return parse_size(raw), ()


def per_device(raw: Mapping[Any, Any]) -> tuple[tuple[str, int], ...]:
    """``{CUDA0: 24GiB, host: 64GiB}`` as ((name, bytes), ...), in the order given."""
    return tuple((str(name), parse_size(size)) for name, size in raw.items())
