"""The in-house schema validator finds what jsonschema finds, and says it the same way.

Profiles are checked by ``llamasup.profiles.schema_validator`` (jsonschema stayed resident in
a serving process for a check that runs only when profiles load). These tests compare the two
on the shipped profiles, the examples, llama-swap configs (not profiles at all: many
violations) and thousands of mutated profiles: the same violations (keyword, paths, message,
the alternatives' violations), in the same order, explained in the same words.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator, ValidationError

from llamasup.core.yamlsrc import KeyPath
from llamasup.profiles.schema import explain_all, schema, schema_issues
from llamasup.profiles.schema_validator import SchemaError, SchemaValidator, Violation, equal

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted(
    [
        *(ROOT / "profiles").glob("*.yaml"),
        *(p for p in (ROOT / "examples").rglob("*.yaml") if "kubernetes" not in p.parts),
    ]
)
NOT_PROFILES = sorted((ROOT / "tests" / "fixtures" / "llama-swap" / "corpus").glob("*.yaml"))
# wrong types, bounds of the schema's minimum/maximum/maxLength, duplicates, empty things
ODD_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 1.5, 2.0, -0.5, 1000, 1001, -1001, 65536, "", "x", "bad name!",
    "-1", "1GB", "never", "auto", "x" * 129, "y" * 201, "127.0.0.1:80", "--temp 0.2",
    "8500-8400", [], [1], ["a", "a"], [True, 1], [1, 1.0], ["x" * 201], ["--ctx-size", 4096],
    {}, {"x": 1}, {"env": "A", "file": "/k"}, {"path": "/m.gguf"}, {"x" * 129: {}},
]  # fmt: skip


def _property_names(node: Any) -> set[str]:
    names: set[str] = set()
    if isinstance(node, dict):
        names.update(node.get("properties", {}))
        for value in node.values():
            names |= _property_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= _property_names(value)
    return names


KNOWN_KEYS = sorted(_property_names(schema()))


def _documents(sources: list[Path]) -> list[Any]:
    found: list[Any] = []
    for path in sources:
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            continue
        if isinstance(data, dict):
            found.append(data)
    return found


DOCUMENTS = _documents(PROFILES)
OTHERS = _documents(NOT_PROFILES)


def _paths(node: Any, at: KeyPath = ()) -> Iterator[KeyPath]:
    yield at
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*at, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*at, index))


def _mutate(doc: Any, rng: random.Random) -> Any:
    """A copy of ``doc`` with one to three things broken (or, by chance, still fine)."""
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        key = path[-1]
        others = [node for p in paths for node in [_at(doc, p)] if not isinstance(node, dict)]
        action = rng.randrange(6)
        if action == 0:
            parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif action == 1:
            parent[key] = copy.deepcopy(rng.choice(others)) if others else None
        elif action == 2:
            del parent[key]
        elif action == 3 and isinstance(parent, dict):
            parent[f"{key}x" if rng.random() < 0.5 else str(key)[:-1] or "k"] = parent[key]
        elif action == 4 and isinstance(parent[key], dict):
            name = rng.choice([*KNOWN_KEYS, "extra", "bad name!", "7", "descripton"])
            parent[key][name] = copy.deepcopy(rng.choice(ODD_VALUES + others))
        else:
            parent[key] = [parent[key]] if rng.random() < 0.5 else {"value": parent[key]}
    return doc


def _at(doc: Any, path: KeyPath) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _shape(error: ValidationError | Violation) -> tuple[Any, ...]:
    context = sorted((_shape(e) for e in error.context or ()), key=repr)
    return (
        error.validator,
        error.message,
        list(error.absolute_path),
        list(error.relative_schema_path),
        error.instance,
        error.validator_value,
        context,
    )


def _ordered(errors: Any) -> list[tuple[Any, ...]]:
    return [_shape(e) for e in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path])]


#: keywords that can fail a value ($ref and properties only lead to others)
_FAILING = frozenset(
    {
        "type", "additionalProperties", "required", "oneOf", "anyOf", "not", "enum", "const",
        "pattern", "minimum", "maximum", "minLength", "maxLength", "minItems", "minProperties",
        "uniqueItems",
    }
)  # fmt: skip
REFERENCE = Draft202012Validator(schema())
OURS = SchemaValidator(schema())


def _compare(doc: Any) -> None:
    reference = list(REFERENCE.iter_errors(doc))
    ours = list(OURS.iter_errors(doc))
    assert _ordered(ours) == _ordered(reference)
    # the same words; jsonschema's order among the violations of one alternative can follow
    # a set's (unknown keys under a mapping of schemas), so only the top level's is compared
    assert sorted(schema_issues(doc)) == sorted(explain_all(reference))


def _note(errors: Any, seen: set[str]) -> None:
    for error in errors:
        seen.add(error.validator)
        _note(error.context or (), seen)


#: keys whose bounds no example comes near, tried in every mapping of every document
TARGETED: dict[str, list[Any]] = {
    "priority": [1000, 1001, -1001, 2.5],
    "group": ["g", "x" * 129],
    "aliases": [["a", "a"], ["y" * 201]],
    "memory": [{}, {"host": "1GiB"}],
    "command": [[], ["serve"]],
}


def _variants(doc: Any, rng: random.Random) -> Iterator[Any]:
    """``doc`` with each value replaced by odd ones, and each mapping given targeted keys."""
    for path in list(_paths(doc))[1:]:
        for value in rng.sample(ODD_VALUES, 12):
            changed = copy.deepcopy(doc)
            _at(changed, path[:-1])[path[-1]] = copy.deepcopy(value)
            yield changed
    for path in _paths(doc):
        if isinstance(_at(doc, path), dict):
            for key, values in TARGETED.items():
                for value in values:
                    changed = copy.deepcopy(doc)
                    _at(changed, path)[key] = copy.deepcopy(value)
                    yield changed


def test_there_is_a_corpus() -> None:
    assert len(DOCUMENTS) >= 5
    assert len(OTHERS) >= 20


@pytest.mark.parametrize("index", range(len(OTHERS)))
def test_llama_swap_configs(index: int) -> None:
    _compare(OTHERS[index])


@pytest.mark.parametrize("index", range(len(DOCUMENTS)))
def test_odd_values_everywhere(index: int) -> None:
    _compare(DOCUMENTS[index])
    for changed in _variants(DOCUMENTS[index], random.Random(index)):
        _compare(changed)


@pytest.mark.parametrize("seed", range(4))
def test_mutated_documents(seed: int) -> None:
    rng = random.Random(seed)
    invalid = 0
    for _ in range(250):
        doc = _mutate(rng.choice(DOCUMENTS), rng)
        _compare(doc)
        invalid += not REFERENCE.is_valid(doc)
    assert invalid > 125  # the mutations do break things


def test_the_corpus_reaches_every_keyword() -> None:
    """Each keyword of the profile schema that can fail a value fails somewhere above."""
    seen: set[str] = set()
    for index, doc in enumerate(DOCUMENTS):
        for changed in _variants(doc, random.Random(index)):
            _note(OURS.iter_errors(changed), seen)
    used = {k for k in repr(schema()).split("'") if k in _FAILING}
    assert used == _FAILING
    assert used <= seen


@pytest.mark.parametrize("value", ODD_VALUES)
def test_anything_where_the_document_goes(value: Any) -> None:
    _compare(value)


#: valid or not, by the edges of JSON equality, types and the keywords' definitions
SMALL_CASES: list[tuple[dict[str, Any], Any]] = [
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, 3),  # valid under both
    ({"oneOf": [{"type": "integer"}, {"minimum": 0}, {"type": "number"}]}, 3),
    ({"oneOf": [{"type": "string"}, {"type": "null"}]}, 3),
    ({"anyOf": [{"type": "string"}, {"minimum": 5}]}, 3),
    ({"enum": [[1, 2], [1], True, {"a": 1}]}, [1, 2, 3]),
    ({"enum": [[1, 2], [1], True, {"a": 1}]}, 1),
    ({"enum": [[1, 2], [1], True, {"a": 1}]}, {"a": 1.0}),
    ({"const": [1, 2]}, [1]),
    ({"uniqueItems": True}, [[1, 2], [1]]),
    ({"uniqueItems": True}, [{"a": 1}, {"a": 1.0}]),
    ({"uniqueItems": True}, [0, False]),
    ({"type": ["integer", "null"]}, 2.0),
    ({"type": ["integer", "null"]}, True),
    ({"minLength": 2, "maxLength": 0}, "x"),
    ({"minItems": 2}, [1]),
    ({"minProperties": 2}, {"a": 1}),
    ({"not": {"required": ["a"]}}, {"a": 1}),
    ({"additionalProperties": {"type": "string"}, "properties": {"a": {}}}, {"a": 1, "b": 2}),
    ({"additionalProperties": False}, {"b": 1, "a": 2}),
    ({"propertyNames": {"pattern": "^[a-z]+$", "maxLength": 3}}, {"abcd": 1, "B": 2}),
    ({"items": {"$ref": "#/$defs/n"}, "$defs": {"n": {"type": "number"}}}, [1, "x", None]),
]


@pytest.mark.parametrize(("small", "instance"), SMALL_CASES)
def test_small_schemas(small: dict[str, Any], instance: Any) -> None:
    reference = list(Draft202012Validator(small).iter_errors(instance))
    assert _ordered(SchemaValidator(small).iter_errors(instance)) == _ordered(reference)


def test_equality_is_json_equality() -> None:
    assert not equal(True, 1)
    assert not equal([False], [0])
    assert equal([1], [1.0])
    assert equal({"a": [1, "x"]}, {"a": [1.0, "x"]})
    assert not equal({"a": 1}, {"b": 1})
    assert not equal("1", 1)


def test_a_keyword_it_does_not_evaluate_is_refused() -> None:
    with pytest.raises(SchemaError, match="patternProperties"):
        SchemaValidator({"type": "object", "patternProperties": {"^x": {"type": "string"}}})
    with pytest.raises(SchemaError, match="does not resolve"):
        SchemaValidator({"$ref": "#/$defs/missing"})
    with pytest.raises(SchemaError, match="unknown type"):
        SchemaValidator({"type": "text"})
