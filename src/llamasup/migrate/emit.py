"""Write a ``Draft`` as profile YAML (one file or a GitOps directory) and check that it loads.

PyYAML cannot write comments, and the notes are the point of an import, so this writes the
small subset of YAML a profile needs by hand. Every scalar is written plain only when reading
it back gives the same value the profile loader would see; otherwise it is double-quoted
(a JSON string is a valid YAML double-quoted scalar).
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from llamasup.migrate.draft import Draft, Entry
from llamasup.profiles.load import load_texts
from llamasup.profiles.types import Profiles
from llamasup.spec.resolve import resolve

Mode = Literal["strict", "args", "command"]
WIDTH = 100
SERVER_FILE, AGENTS_FILE = "00-server.yaml", "agents.yaml"
_FILE_BAD = re.compile(r"[^A-Za-z0-9._+-]+")


def render_single(draft: Draft) -> dict[str, str]:
    """The whole profile set as one file."""
    lines = _header(draft)
    lines += ["version: 1", ""]
    lines += _server_block(draft)
    lines += _section("groups", draft.groups)
    lines += _section("models", draft.models)
    lines += _section("agents", draft.agents)
    return {"profiles.yaml": _finish(lines)}


def render_directory(draft: Draft) -> dict[str, str]:
    """GitOps layout: server and groups, one file per model, the agents."""
    server = [*_header(draft), "version: 1", "", *_server_block(draft)]
    server += _section("groups", draft.groups)
    files = {SERVER_FILE: _finish(server)}
    taken = {SERVER_FILE, AGENTS_FILE}
    for model_id, entry in draft.models.items():
        name = _file_name(model_id, taken)
        taken.add(name)
        files[name] = _finish(_section("models", {model_id: entry}))
    if draft.agents:
        files[AGENTS_FILE] = _finish(_section("agents", draft.agents))
    return files


def _file_name(model_id: str, taken: set[str]) -> str:
    stem = f"10-{_FILE_BAD.sub('_', model_id)}"
    name, n = f"{stem}.yaml", 2
    while name in taken:
        name, n = f"{stem}-{n}.yaml", n + 1
    return name


def validate(files: Mapping[str, str], directory: Path, environ: Mapping[str, str]) -> Profiles:
    """Load the rendered files exactly as ``llamasup validate`` would; raises ``ProfileError``."""
    texts = [(str(directory / name), text, directory) for name, text in sorted(files.items())]
    return load_texts(texts, source=str(directory), environ=environ)


def model_argvs(profiles: Profiles) -> dict[str, tuple[str, ...]]:
    """Each model's binary and argv (without the --host/--port llamasup adds at spawn time)."""
    result: dict[str, tuple[str, ...]] = {}
    for model_id in profiles.models:
        spec = resolve(profiles, model_id).spec
        result[model_id] = (spec.binary, *spec.args)
    return result


# -- writing ---------------------------------------------------------------------------------


def _header(draft: Draft) -> list[str]:
    lines = _comments([f"Imported from {draft.source} by `llamasup import`."], 0)
    if draft.header:
        lines += ["#", *_comments(draft.header, 0)]
    return [*lines, ""]


def _server_block(draft: Draft) -> list[str]:
    if not draft.server and not draft.server_notes.get(""):
        return []
    lines = [*_comments(draft.server_notes.get("", []), 0), "server:"]
    for key, value in draft.server.items():
        lines += _comments(draft.server_notes.get(key, []), 2)
        lines += _key_value(key, value, 2, "args" if key == "base_args" else "strict")
    return [*lines, ""]


def _section(title: str, entries: Mapping[str, Entry]) -> list[str]:
    if not entries:
        return []
    # a section of commented-out entries only would read as null
    everything_off = all(entry.disabled for entry in entries.values())
    lines = [f"{title}: {{}}" if everything_off else f"{title}:"]
    for name, entry in entries.items():
        lines += _comments(entry.notes, 2)
        body = [f"  {_key(name)}:"]
        for key, value in entry.fields.items():
            mode: Mode = "args" if key in ("args", "flags") else "strict"
            body += _key_value(key, value, 4, "command" if key == "command" else mode)
        if not entry.fields:
            body = [f"  {_key(name)}: {{}}"]
        lines += [f"  # {line[2:]}" for line in body] if entry.disabled else body
    return [*lines, ""]


def _key_value(key: str, value: Any, indent: int, mode: Mode) -> list[str]:
    pad = " " * indent
    if isinstance(value, Mapping):
        if not value:
            return [f"{pad}{_key(key)}: {{}}"]
        lines = [f"{pad}{_key(key)}:"]
        for child_key, child in value.items():
            lines += _key_value(str(child_key), child, indent + 2, mode)
        return lines
    if isinstance(value, list | tuple):
        return _sequence(key, value, indent, mode)
    return [f"{pad}{_key(key)}: {scalar(value, mode)}"]


def _sequence(key: str, items: Sequence[Any], indent: int, mode: Mode) -> list[str]:
    pad = " " * indent
    if all(not isinstance(item, Mapping) for item in items):
        flow = f"{pad}{_key(key)}: [{', '.join(scalar(item, mode) for item in items)}]"
        if len(flow) <= WIDTH or not items:
            return [flow]
        return [f"{pad}{_key(key)}:"] + [f"{pad}  - {scalar(item, mode)}" for item in items]
    lines = [f"{pad}{_key(key)}:"]
    for item in items:
        first = True
        for child_key, child in item.items():
            prefix = f"{pad}  - " if first else f"{pad}    "
            lines.append(f"{prefix}{_key(str(child_key))}: {scalar(child, mode)}")
            first = False
    return lines


def _comments(notes: Sequence[str], indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for note in notes:
        wrapped = textwrap.wrap(note, WIDTH - indent - 2, break_on_hyphens=False) or [""]
        lines += [f"{pad}# {wrapped[0]}"] + [f"{pad}#   {rest}" for rest in wrapped[1:]]
    return lines


def _finish(lines: list[str]) -> str:
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def _key(name: str) -> str:
    return name if _plain_ok(name, "strict") else json.dumps(name, ensure_ascii=False)


def scalar(value: Any, mode: Mode = "strict") -> str:
    """One YAML scalar that reads back as what the profile loader expects."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    return text if _plain_ok(text, mode) else json.dumps(text, ensure_ascii=False)


def _plain_ok(text: str, mode: Mode) -> bool:
    if not text or text != text.strip() or "\n" in text:
        return False
    try:
        in_flow = yaml.safe_load(f"[{text}]")
        in_block = yaml.safe_load(f"k: {text}")
    except yaml.YAMLError:
        return False
    if not (isinstance(in_flow, list) and len(in_flow) == 1 and in_block == {"k": in_flow[0]}):
        return False
    loaded = in_flow[0]
    if isinstance(loaded, str):
        return loaded == text
    # flag lists turn YAML numbers into their text, and booleans into on/off
    if isinstance(loaded, bool):
        return mode == "args" and text == ("on" if loaded else "off")
    if isinstance(loaded, int | float):
        return mode != "strict" and str(loaded) == text
    return False
