"""``request: {force, strip}`` of a model or agent → ``RequestRules``, with its problems."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llamasup.profiles.types import RequestRules

#: (key path below ``request``, message)
Problem = tuple[tuple[str, ...], str]


def request_rules(raw: Any) -> tuple[RequestRules, list[Problem]]:
    """The rules and what is wrong with them (their types are the schema's business)."""
    if not isinstance(raw, Mapping):
        return RequestRules(), []
    force = dict(raw.get("force") or {})
    strip = tuple(str(key) for key in raw.get("strip") or ())
    problems: list[Problem] = []
    if "model" in force:
        problems.append((("force", "model"), "llamasup sets model (see upstream_model)"))
    if "model" in strip:
        problems.append((("strip",), "model cannot be stripped: the sidecar needs it"))
    for key, value in force.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            problems.append((("force", str(key)), f"{value!r} is not a JSON value (quote it)"))
    return RequestRules(force=force, strip=strip), problems
