"""The part of JSON Schema (draft 2020-12) that the profile schema uses, checked in-house.

jsonschema (with referencing, rpds, attrs and its format checkers) stayed resident for the
whole life of a serving process (~4.7 MB of its idle memory) for a check that runs only when
profiles are loaded: at start, on a reload, an apply, ``llamasup validate``. The profile schema
uses twenty keywords, all evaluated here as draft 2020-12 defines them. A violation carries
what ``schema.py`` reads from jsonschema's ``ValidationError`` (keyword, its value, instance,
subschema, paths, the alternatives' violations of a failed ``oneOf``/``anyOf``) and the same
message text, in the same order; ``tests/profiles/test_schema_validator.py`` checks both
against jsonschema on the shipped profiles and on many mutated ones.

A schema that uses a keyword outside this set is refused when the validator is built, so a
schema change cannot be skipped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any

Path = tuple[str | int, ...]

#: keywords that only annotate (never fail a value)
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples"}
)
_TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})


@dataclass(frozen=True, eq=False)
class Violation:
    """One way an instance breaks the schema (the attributes jsonschema's errors have)."""

    message: str
    validator: str  # the keyword that failed
    validator_value: Any
    instance: Any
    schema: Mapping[str, Any]  # the (sub)schema holding the keyword
    absolute_path: Path  # where in the instance
    relative_schema_path: Path  # where in the schema, from the enclosing oneOf/anyOf option
    context: tuple[Violation, ...] = ()  # a failed oneOf/anyOf: each option's violations


class SchemaError(ValueError):
    """The schema uses something this validator does not evaluate."""


def is_type(instance: Any, name: str) -> bool:
    if name == "object":
        return isinstance(instance, dict)
    if name == "array":
        return isinstance(instance, list)
    if name == "string":
        return isinstance(instance, str)
    if name == "null":
        return instance is None
    if isinstance(instance, bool):
        return name == "boolean"
    if name == "integer":
        return isinstance(instance, int) or (isinstance(instance, float) and instance.is_integer())
    return name == "number" and isinstance(instance, (int, float))


def equal(one: Any, two: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, ``[1]`` is ``[1.0]``."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(equal(a, b) for a, b in zip(one, two, strict=True))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return one.keys() == two.keys() and all(equal(one[key], two[key]) for key in one)
    if isinstance(one, bool) or isinstance(two, bool):
        return isinstance(one, bool) and isinstance(two, bool) and one == two
    return bool(one == two)


def _unique(items: Sequence[Any]) -> bool:
    return not any(equal(items[i], items[j]) for i in range(len(items)) for j in range(i))


def _too_few(count: int, limit: int, short: str) -> str | None:
    """What a too small array, string or mapping is said to be; None if it is not."""
    if count >= limit:
        return None
    return "should be non-empty" if limit == 1 else short


class SchemaValidator:
    """Validates instances against one schema (whose ``$ref`` point into itself)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        self._check_schema(schema, "#")

    def iter_errors(self, instance: Any) -> Iterator[Violation]:
        """Every violation, in the order jsonschema reports them."""
        return self._descend(instance, self.schema, (), ())

    def is_valid(self, instance: Any, schema: Mapping[str, Any] | None = None) -> bool:
        target = self.schema if schema is None else schema
        return next(self._descend(instance, target, (), ()), None) is None

    # -- the walk ----------------------------------------------------------------------------

    def _descend(
        self, instance: Any, schema: Mapping[str, Any], path: Path, at: Path
    ) -> Iterator[Violation]:
        for keyword, value in schema.items():
            check = _KEYWORDS.get(keyword)
            if check is not None:
                where = at if keyword == "$ref" else (*at, keyword)
                yield from check(_Step(self, keyword, value, instance, schema, path, where))

    def resolve(self, ref: str) -> Mapping[str, Any]:
        node: Any = self.schema
        for part in ref[1:].split("/")[1:]:
            key = part.replace("~1", "/").replace("~0", "~")
            node = node[int(key)] if isinstance(node, list) else node[key]
        if not isinstance(node, Mapping):
            raise SchemaError(f"{ref} is not a schema")
        return node

    def _check_schema(self, schema: Any, where: str) -> None:
        if not isinstance(schema, Mapping):
            raise SchemaError(f"{where}: a schema here is a mapping (boolean schemas: unsupported)")
        for keyword, value in schema.items():
            at = f"{where}/{keyword}"
            if keyword == "$defs":
                for name, sub in value.items():
                    self._check_schema(sub, f"{at}/{name}")
            elif keyword in _ANNOTATIONS:
                continue
            elif keyword not in _KEYWORDS:
                raise SchemaError(f"{at}: keyword {keyword!r} is not supported")
            elif keyword == "properties":
                for name, sub in value.items():
                    self._check_schema(sub, f"{at}/{name}")
            elif keyword in ("oneOf", "anyOf"):
                for index, sub in enumerate(value):
                    self._check_schema(sub, f"{at}/{index}")
            elif keyword in ("items", "not", "propertyNames") or (
                keyword == "additionalProperties" and not isinstance(value, bool)
            ):
                self._check_schema(value, at)
            elif keyword == "$ref":
                if not isinstance(value, str) or not value.startswith("#"):
                    raise SchemaError(f"{at}: only references into this schema are supported")
                try:
                    self.resolve(value)
                except (KeyError, IndexError, ValueError) as exc:
                    raise SchemaError(f"{at}: {value} does not resolve") from exc
            elif keyword == "type":
                names = value if isinstance(value, list) else [value]
                if not set(names) <= _TYPES:
                    raise SchemaError(f"{at}: unknown type in {value!r}")


@dataclass(frozen=True)
class _Step:
    """One keyword of one subschema, applied to one instance."""

    validator: SchemaValidator
    keyword: str
    value: Any
    instance: Any
    schema: Mapping[str, Any]
    path: Path
    at: Path  # schema path of the keyword

    def fail(self, message: str, context: tuple[Violation, ...] = ()) -> Violation:
        return Violation(
            message, self.keyword, self.value, self.instance, self.schema, self.path, self.at,
            context,
        )  # fmt: skip

    def descend(self, instance: Any, schema: Any, key: str | int | None) -> Iterator[Violation]:
        path = self.path if key is None else (*self.path, key)
        return self.validator._descend(instance, schema, path, self.at)


def _type(step: _Step) -> Iterator[Violation]:
    names = step.value if isinstance(step.value, list) else [step.value]
    if not any(is_type(step.instance, name) for name in names):
        shown = ", ".join(repr(name) for name in names)
        yield step.fail(f"{step.instance!r} is not of type {shown}")


def _ref(step: _Step) -> Iterator[Violation]:
    target = step.validator.resolve(step.value)
    yield from step.validator._descend(step.instance, target, step.path, step.at)


def _properties(step: _Step) -> Iterator[Violation]:
    if isinstance(step.instance, dict):
        for name, sub in step.value.items():
            if name in step.instance:
                path = (*step.path, name)
                yield from step.validator._descend(step.instance[name], sub, path, (*step.at, name))


def _additional_properties(step: _Step) -> Iterator[Violation]:
    if not isinstance(step.instance, dict):
        return
    known = step.schema.get("properties", {})
    extras = [key for key in step.instance if key not in known]
    if isinstance(step.value, Mapping):
        for key in extras:
            yield from step.descend(step.instance[key], step.value, key)
    elif step.value is False and extras:
        extras.sort(key=str)
        verb = "was" if len(extras) == 1 else "were"
        listed = ", ".join(repr(key) for key in extras)
        yield step.fail(f"Additional properties are not allowed ({listed} {verb} unexpected)")


def _property_names(step: _Step) -> Iterator[Violation]:
    if isinstance(step.instance, dict):
        for key in step.instance:
            yield from step.descend(key, step.value, None)


def _required(step: _Step) -> Iterator[Violation]:
    if isinstance(step.instance, dict):
        for key in step.value:
            if key not in step.instance:
                yield step.fail(f"{key!r} is a required property")


def _items(step: _Step) -> Iterator[Violation]:
    if isinstance(step.instance, list):
        for index, item in enumerate(step.instance):
            yield from step.descend(item, step.value, index)


def _alternatives(step: _Step, *, exactly_one: bool) -> Iterator[Violation]:
    found: list[Violation] = []
    options = list(enumerate(step.value))
    for index, option in options:
        errors = list(step.validator._descend(step.instance, option, step.path, (index,)))
        if not errors:
            if exactly_one:
                also = [
                    o for _, o in options[index + 1 :] if step.validator.is_valid(step.instance, o)
                ]
                if also:
                    shown = ", ".join(repr(o) for o in [*also, option])
                    yield step.fail(f"{step.instance!r} is valid under each of {shown}")
            return
        found.extend(errors)
    yield step.fail(f"{step.instance!r} is not valid under any of the given schemas", tuple(found))


def _not(step: _Step) -> Iterator[Violation]:
    if step.validator.is_valid(step.instance, step.value):
        yield step.fail(f"{step.instance!r} should not be valid under {step.value!r}")


def _enum(step: _Step) -> Iterator[Violation]:
    if not any(equal(each, step.instance) for each in step.value):
        yield step.fail(f"{step.instance!r} is not one of {step.value!r}")


def _const(step: _Step) -> Iterator[Violation]:
    if not equal(step.instance, step.value):
        yield step.fail(f"{step.value!r} was expected")


def _pattern(step: _Step) -> Iterator[Violation]:
    if isinstance(step.instance, str) and not re.search(step.value, step.instance):
        yield step.fail(f"{step.instance!r} does not match {step.value!r}")


def _minimum(step: _Step) -> Iterator[Violation]:
    if is_type(step.instance, "number") and step.instance < step.value:
        yield step.fail(f"{step.instance!r} is less than the minimum of {step.value!r}")


def _maximum(step: _Step) -> Iterator[Violation]:
    if is_type(step.instance, "number") and step.instance > step.value:
        yield step.fail(f"{step.instance!r} is greater than the maximum of {step.value!r}")


def _at_least(kind: type[Sized], short: str) -> Callable[[_Step], Iterator[Violation]]:
    """``minLength``, ``minItems``, ``minProperties``: at least so many characters, items or
    properties in a ``kind`` instance; ``short`` is what jsonschema says of one with fewer."""

    def check(step: _Step) -> Iterator[Violation]:
        if isinstance(step.instance, kind):
            said = _too_few(len(step.instance), step.value, short)
            if said:
                yield step.fail(f"{step.instance!r} {said}")

    return check


def _max_length(step: _Step) -> Iterator[Violation]:
    if isinstance(step.instance, str) and len(step.instance) > step.value:
        said = "is expected to be empty" if step.value == 0 else "is too long"
        yield step.fail(f"{step.instance!r} {said}")


def _unique_items(step: _Step) -> Iterator[Violation]:
    if step.value and isinstance(step.instance, list) and not _unique(step.instance):
        yield step.fail(f"{step.instance!r} has non-unique elements")


_KEYWORDS: dict[str, Callable[[_Step], Iterator[Violation]]] = {
    "type": _type,
    "$ref": _ref,
    "properties": _properties,
    "additionalProperties": _additional_properties,
    "propertyNames": _property_names,
    "required": _required,
    "items": _items,
    "oneOf": lambda step: _alternatives(step, exactly_one=True),
    "anyOf": lambda step: _alternatives(step, exactly_one=False),
    "not": _not,
    "enum": _enum,
    "const": _const,
    "pattern": _pattern,
    "minimum": _minimum,
    "maximum": _maximum,
    "minLength": _at_least(str, "is too short"),
    "maxLength": _max_length,
    "minItems": _at_least(list, "is too short"),
    "minProperties": _at_least(dict, "does not have enough properties"),
    "uniqueItems": _unique_items,
}
