"""``server.memory_budget``: one size for all sidecar memory, or a size per device."""

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
        budgets = tuple((str(name), parse_size(size)) for name, size in raw.items())
        return {"memory_budget": None, "device_budgets": budgets}
    return {"memory_budget": None if raw is None else parse_size(raw), "device_budgets": ()}
