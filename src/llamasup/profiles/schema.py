"""The JSON Schema of profile files, and its errors told in a profile author's words."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any, Protocol

from llamasup.core.yamlsrc import KeyPath
from llamasup.profiles.schema_validator import SchemaValidator

SCHEMA_RESOURCE = "profiles.schema.json"


@cache
def schema() -> dict[str, Any]:
    text = resources.files("llamasup.schemas").joinpath(SCHEMA_RESOURCE).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator() -> SchemaValidator:
    return SchemaValidator(schema())


class Violation(Protocol):
    """What is explained of a schema violation (``schema_validator.Violation``; jsonschema's
    ``ValidationError`` has the same, which the tests use to compare the two)."""

    @property
    def message(self) -> str: ...
    @property
    def validator(self) -> Any: ...
    @property
    def validator_value(self) -> Any: ...
    @property
    def instance(self) -> Any: ...
    @property
    def schema(self) -> Mapping[str, Any] | bool: ...
    @property
    def absolute_path(self) -> Sequence[str | int]: ...
    @property
    def relative_schema_path(self) -> Sequence[str | int]: ...
    @property
    def context(self) -> Iterable[Violation] | None: ...


def schema_issues(data: Any) -> Iterator[tuple[KeyPath, str]]:
    """(key path, message) for every schema violation, in document order.

    The key path is also what is invalid: pruning it leaves data that satisfies the schema
    there, so the remaining checks can still run and report their own findings.
    """
    return explain_all(_validator().iter_errors(data))


def explain_all(violations: Iterable[Violation]) -> Iterator[tuple[KeyPath, str]]:
    """(key path, message) for each violation, ordered by key path (stable)."""
    ordered = sorted(violations, key=lambda e: [str(p) for p in e.absolute_path])
    for violation in ordered:
        yield from _explain(violation)


def _alternatives(rule: Any) -> str:
    """``a, or b`` from the descriptions of the shapes a oneOf/anyOf allows; empty if any of
    them has none (the caller then falls back to the enclosing description)."""
    if not isinstance(rule, list):
        return ""
    defs = schema().get("$defs", {})
    shown: list[str] = []
    for option in rule:
        if not isinstance(option, dict):
            return ""
        ref = option.get("$ref", "")
        target = defs.get(ref.rsplit("/", 1)[-1], {}) if ref.startswith("#/$defs/") else option
        if target.get("type") == "null":
            shown.append("null")
        elif isinstance(target.get("description"), str):
            shown.append(target["description"])
        else:
            return ""
    return ", or ".join(shown)


def _explain(error: Violation) -> Iterator[tuple[KeyPath, str]]:
    path: KeyPath = tuple(error.absolute_path)
    if "propertyNames" in error.relative_schema_path:
        yield (
            (*path, str(error.instance)),
            (
                f"invalid name {error.instance!r}: names start with a letter or digit and use only "
                "letters, digits and . _ : + -"
            ),
        )
        return
    validator, sub = error.validator, error.schema
    instance: Any = error.instance
    rule: Any = error.validator_value
    description = sub.get("description") if isinstance(sub, dict) else None
    if validator == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(sub.get("properties", {})) if isinstance(sub, dict) else []
        known = set(allowed)
        for key in instance:
            if key not in known:
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                yield (*path, key), f"unknown key {key!r}{hint}; allowed: {', '.join(allowed)}"
        return
    if validator == "propertyNames":
        yield (
            path,
            (
                f"invalid name {instance!r}: names start with a letter or digit and use only "
                "letters, digits and . _ : + -"
            ),
        )
        return
    if validator == "required":
        missing = [key for key in rule if key not in instance]
        yield path, f"missing required key {', '.join(map(repr, missing))}"
        return
    if validator == "not" and path[:1] == ("models",):
        yield path, "a model has either path (llama-server) or command (other upstream), not both"
        return
    if validator in ("oneOf", "anyOf"):
        if path[:2] == ("server", "api_keys"):
            yield path, "an API key takes its value from exactly one of env or file"
            return
        if isinstance(instance, dict) and isinstance(rule, list):
            # a mapping where a mapping is one of the shapes: say what is wrong inside it
            for index, option in enumerate(rule):
                if isinstance(option, dict) and option.get("type") == "object":
                    context = error.context or ()
                    inner = [e for e in context if list(e.relative_schema_path)[:1] == [index]]
                    if inner:
                        for inner_error in inner:
                            yield from _explain(inner_error)
                        return
        expected = _alternatives(rule) or description or "a value of another shape"
        yield path, f"expected {expected}; got {instance!r}"
        return
    if validator == "enum":
        choices = ", ".join(map(str, rule))
        yield path, f"must be one of {choices}; got {instance!r}"
        return
    if validator == "const":
        yield path, f"must be {rule!r}; got {instance!r}"
        return
    if validator == "type":
        expected = rule
        expected_text = " or ".join(expected) if isinstance(expected, list) else expected
        yield path, f"expected {expected_text}; got {type(instance).__name__} {instance!r}"
        return
    if validator == "pattern":
        hint = description or f"must match {rule}"
        yield path, f"{instance!r} is not valid here: {hint}"
        return
    if validator in ("minimum", "minItems", "minLength", "maxLength", "uniqueItems"):
        yield path, f"{instance!r}: {error.message}"
        return
    yield path, error.message
