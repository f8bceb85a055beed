"""Read YAML the way a profile needs it: with line numbers, and without silent surprises.

PyYAML keeps the last of two equal keys without a word; here a duplicate key is an error.
A UTF-8 byte order mark is tolerated (editors on Windows write one). Merge keys (``<<``) work.
Every value's line is recorded under its key path so later errors can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

KeyPath = tuple[str | int, ...]


@dataclass
class YamlDoc:
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)
    duplicates: list[tuple[KeyPath, int, int]] = field(default_factory=list)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path`` or of its nearest recorded ancestor."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.lines.get((), None)


class YamlSyntaxError(ValueError):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def format_path(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def load_yaml(text: str) -> YamlDoc:
    """Parse one YAML document, recording lines and duplicate keys."""
    text = text.removeprefix("\ufeff")
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or str(exc)
        raise YamlSyntaxError(f"YAML syntax error: {problem}", line) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"YAML error: {exc}", None) from exc
    finally:
        loader.dispose()
    doc = YamlDoc(data=None)
    if root is None:
        return doc
    doc.data = _convert(root, (), doc, loader)
    return doc


def _convert(node: Node, path: KeyPath, doc: YamlDoc, loader: yaml.SafeLoader) -> Any:
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, MappingNode):
        return _convert_mapping(node, path, doc, loader)
    if isinstance(node, SequenceNode):
        return [_convert(item, (*path, i), doc, loader) for i, item in enumerate(node.value)]
    if isinstance(node, ScalarNode):
        return loader.construct_object(node, deep=True)
    raise YamlSyntaxError(f"unsupported YAML node {node.tag}", node.start_mark.line + 1)


def _convert_mapping(
    node: MappingNode, path: KeyPath, doc: YamlDoc, loader: yaml.SafeLoader
) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            doc.duplicates.append(((*path, str(key)), seen[key], line))
        else:
            seen[key] = line
    # merge keys: explicit keys win over merged ones, as YAML specifies
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise YamlSyntaxError("mapping keys must be scalars", key_node.start_mark.line + 1)
        child = (*path, str(key))
        doc.lines[child] = key_node.start_mark.line + 1
        result[str(key) if not isinstance(key, str) else key] = _convert(
            value_node, child, doc, loader
        )
    return result
