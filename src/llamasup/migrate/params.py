"""Request body parameters (llama-swap's ``filters.setParams``) → llama-server request flags.

Only parameters with a REQUEST-kind flag in the flag table translate: those are exactly the
request fields llama-server also accepts as a command-line default. Anything else (provider
routing, fields llama-server does not read) has no profile equivalent and is reported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from llamasup.flags.flagset import parse
from llamasup.flags.table import TABLE
from llamasup.flags.vocabulary import FlagDef, Kind, Layer, ValueType

#: OpenAI spellings llama-server reads as another field
_SYNONYMS = {"max_tokens": "n_predict", "max_completion_tokens": "n_predict"}


@cache
def _by_field() -> dict[str, FlagDef]:
    found: dict[str, FlagDef] = {}
    for definition in TABLE:
        if definition.kind is Kind.REQUEST and definition.field:
            found.setdefault(definition.field, definition)
    return found


@dataclass
class ParamFlags:
    tokens: list[str] = field(default_factory=list)
    #: canonical flag names set, for replacing the same flag from the command line
    names: set[str] = field(default_factory=set)
    #: (parameter, why it was not translated)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def request_flags(params: Mapping[str, Any]) -> ParamFlags:
    result = ParamFlags()
    for name, value in params.items():
        if name == "model":
            continue  # llama-swap never lets a filter touch the model either
        definition = _by_field().get(_SYNONYMS.get(name, name))
        if definition is None:
            result.skipped.append((name, "not a llama-server sampling/request parameter"))
            continue
        try:
            tokens = _tokens(definition, value)
        except ValueError as exc:
            result.skipped.append((name, str(exc)))
            continue
        parsed = parse(tokens, Layer.AGENT)
        if parsed.errors:
            result.skipped.append((name, str(parsed.errors[0])))
            continue
        result.tokens += tokens
        result.names.add(definition.name)
    return result


def _tokens(definition: FlagDef, value: Any) -> list[str]:
    flag, kind = definition.name, definition.value
    if kind is ValueType.SWITCH:
        if value is True:
            return [flag]
        raise ValueError(f"{value!r} is llama-server's default; only true can be expressed")
    if isinstance(value, bool) and kind is not ValueType.JSON:
        raise ValueError(f"expects a {kind.value} value, got {value!r}")
    if kind is ValueType.JSON:
        return [flag, json.dumps(value, separators=(",", ":"), sort_keys=True)]
    if definition.field == "samplers" and isinstance(value, list):
        return [flag, ";".join(str(v) for v in value)]
    if definition.field == "dry_sequence_breakers" and value == []:
        return [flag, "none"]
    if definition.field == "logit_bias":
        return [part for item in _logit_bias(value) for part in (flag, item)]
    if definition.repeatable and isinstance(value, list):
        return [part for item in value for part in (flag, str(item))]
    if isinstance(value, list | dict):
        raise ValueError(f"expects a single {kind.value} value, got {json.dumps(value)}")
    if kind is ValueType.INT and isinstance(value, float) and value.is_integer():
        value = int(value)
    return [flag, str(value)]


def _logit_bias(value: Any) -> list[str]:
    pairs: list[tuple[Any, Any]]
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value):
        pairs = [(p[0], p[1]) for p in value]
    else:
        raise ValueError("logit_bias must be {token: bias} or [[token, bias], ...]")
    items = []
    for token, bias in pairs:
        if not str(token).isdigit():
            raise ValueError(f"logit_bias token {token!r} is not a token id")
        if bias is False:
            items.append(f"{token}-inf")
        elif isinstance(bias, int | float) and not isinstance(bias, bool):
            items.append(f"{token}{'+' if bias >= 0 else '-'}{abs(bias)}")
        else:
            raise ValueError(f"logit_bias value {bias!r} is not a number or false")
    return items
