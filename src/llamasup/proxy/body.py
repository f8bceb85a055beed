"""The request body: parsed once, edited in place as text instead of re-serialised.

An agent's request is usually long (the whole conversation) and needs a few small edits: the
``model`` value, a few sampling defaults, and the parameters a profile forces or strips.
Re-serialising the parsed body costs about twice as much as parsing it (~450 µs for a 120 KB
body on this machine, see ``bench/RESULTS.md``); splicing the edits into the original text
costs almost nothing.
So the top level of a large object is walked by hand, each value parsed by the standard C
scanner, and the span of every top-level member remembered for the edits. Small bodies
(below :data:`SPLICE_FROM` bytes) are cheaper to parse and re-serialise whole.

Both paths read a body the same way: a key given twice means its last value (as
``json.loads`` has it), and a body llamasup edits goes out with each key once, so the sidecar
reads what llamasup decided whatever its parser does with duplicates (a body that needs no
edit goes out as sent). A body nested deeper than Python's recursion limit is invalid JSON
(400), not a crash.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from typing import Any, AnyStr

from llamasup.proxy.envelope import ProxyError

_DECODER = json.JSONDecoder()
#: the C string scanner when available (not in the type stubs)
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
#: from this size on, the walk-and-splice path is faster than json.loads + json.dumps
SPLICE_FROM = 3 * 1024


class RequestBody:
    """A JSON object body: its top-level values and, for a large body, where each value
    sits in the text (``spans`` is None for a small body, which is re-serialised instead).

    ``members`` lists every top-level member of a large body in order, duplicates included,
    as (key, start of its key, end of its value): what removing a member needs.
    """

    __slots__ = ("after_brace", "members", "raw", "spans", "text", "values")

    def __init__(
        self,
        raw: bytes,
        text: str,
        values: dict[str, Any],
        spans: dict[str, tuple[int, int]] | None,
        after_brace: int,
        *,
        members: list[tuple[str, int, int]] | None = None,
    ) -> None:
        self.raw = raw
        self.text = text
        self.values = values
        self.spans = spans
        self.after_brace = after_brace
        self.members = members or []

    def get(self, key: str) -> Any:
        return self.values.get(key)


def parse_body(raw: bytes) -> RequestBody:
    """Parse a JSON object body; 400 (``invalid_json``) for anything else."""
    if not raw:
        return RequestBody(raw, "{}", {}, {}, 1)
    try:
        if len(raw) < SPLICE_FROM:
            values = json.loads(raw)
            if not isinstance(values, dict):
                raise ProxyError(400, "invalid_json", "request body must be a JSON object")
            return RequestBody(raw, "", values, None, 0)
        return _walk(raw, raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProxyError(400, "invalid_json", f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # the C scanner counts nesting against the recursion limit
        raise ProxyError(
            400, "invalid_json", "request body is not valid JSON: it is nested too deeply"
        ) from exc


def _walk(raw: bytes, text: str) -> RequestBody:
    at = _skip(text, 0)
    if text[at : at + 1] != "{":
        _DECODER.decode(text)  # raises for malformed JSON, with the decoder's own message
        raise ProxyError(400, "invalid_json", "request body must be a JSON object")
    at += 1
    after_brace = at
    values: dict[str, Any] = {}
    spans: dict[str, tuple[int, int]] = {}
    repeated = False
    members: list[tuple[str, int, int]] = []
    at = _skip(text, at)
    if text[at : at + 1] == "}":
        at += 1
    else:
        while True:
            if text[at : at + 1] != '"':
                raise ValueError(f"expecting a property name at character {at}")
            key_start = at
            key, at = _scanstring(text, at + 1)
            at = _skip(text, at)
            if text[at : at + 1] != ":":
                raise ValueError(f"expecting ':' at character {at}")
            start = _skip(text, at + 1)
            repeated = repeated or key in values
            values[key], end = _DECODER.raw_decode(text, start)
            spans[key] = (start, end)
            members.append((key, key_start, end))
            at = _skip(text, end)
            sep = text[at : at + 1]
            at = _skip(text, at + 1)
            if sep == "}":
                break
            if sep != ",":
                raise ValueError(f"expecting ',' or '}}' at character {at}")
    if _skip(text, at) != len(text):
        raise ValueError(f"extra data after the object at character {at}")
    if repeated:
        # a splice would leave the earlier occurrences in the text for the sidecar to read
        # (or not): re-serialise instead, which keeps each key once, with its last value
        return RequestBody(raw, "", values, None, 0)
    return RequestBody(raw, text, values, spans, after_brace, members=members)


def _skip(text: str, at: int) -> int:
    """The index of the first non-whitespace character from ``at`` (usually ``at`` itself)."""
    end = len(text)
    while at < end and text[at] in " \t\n\r":
        at += 1
    return at


def edit_body(
    body: RequestBody,
    *,
    model: str,
    defaults: Mapping[str, Any],
    synonyms: Mapping[str, tuple[str, ...]],
    force: Mapping[str, Any] | None = None,
    strip: Collection[str] = (),
) -> bytes:
    """The body with ``model`` set, ``strip`` keys removed, ``defaults`` added where the client
    set nothing, and ``force`` values set whatever the client sent.

    Client values win over defaults (an explicit ``null`` counts as unset); a default is also
    skipped when the client set one of its ``synonyms``, and for a stripped or forced key.
    Forced values win over everything. Unchanged bodies go out as the client's bytes.
    """
    force = force or {}
    # a forced key is removed wherever it appears (duplicates too) and added once
    removed = {key for key in (*strip, *force) if key in body.values}
    if body.spans is None:
        return _reserialise(
            body, model=model, defaults=defaults, synonyms=synonyms, force=force, strip=strip
        )
    values = body.values
    spans = body.spans
    edits: list[tuple[int, int, str]] = _removals(body, removed)
    added: list[str] = []  # new members
    if values.get("model") != model:
        span = spans.get("model")
        if span is None:
            added.append('"model":' + json.dumps(model))
        else:
            edits.append((span[0], span[1], json.dumps(model)))
    for key, value in defaults.items():
        if values.get(key) is not None or key in force or key in strip:
            continue
        others = synonyms.get(key)
        if others is not None and any(values.get(s) is not None for s in others):
            continue
        span = spans.get(key)
        if span is None:
            added.append(json.dumps(key) + ":" + json.dumps(value, separators=(",", ":")))
        else:  # the client sent null: the default takes its place
            edits.append((span[0], span[1], json.dumps(value, separators=(",", ":"))))
    added += [json.dumps(k) + ":" + json.dumps(v, separators=(",", ":")) for k, v in force.items()]
    if not edits and not added:
        return body.raw
    if added:
        # new members go first, right after the opening brace
        kept = any(key not in removed for key, _, _ in body.members)
        edits.append((body.after_brace, body.after_brace, ",".join(added) + ("," if kept else "")))
    edits.sort()
    if len(body.raw) == len(body.text):
        # all ASCII: offsets in text and bytes agree, so splice the bytes (one copy)
        return _splice(body.raw, [(a, z, r.encode()) for a, z, r in edits])
    return _splice(body.text, edits).encode()


def _removals(body: RequestBody, removed: Collection[str]) -> list[tuple[int, int, str]]:
    """Edits that delete every member named in ``removed``, with the commas between them.

    A run of removed members goes from its first key to the next kept member's key; a run
    that ends the object goes from the end of the kept member before it (its comma with it).
    """
    if not removed:
        return []
    members = body.members
    edits: list[tuple[int, int, str]] = []
    i = 0
    while i < len(members):
        if members[i][0] not in removed:
            i += 1
            continue
        first = i
        while i < len(members) and members[i][0] in removed:
            i += 1
        if i < len(members):
            edits.append((members[first][1], members[i][1], ""))
        elif first > 0:
            edits.append((members[first - 1][2], members[-1][2], ""))
        else:
            edits.append((members[0][1], members[-1][2], ""))
    return edits


def _splice(source: AnyStr, edits: list[tuple[int, int, AnyStr]]) -> AnyStr:
    pieces: list[AnyStr] = []
    cursor = 0
    for start, end, replacement in edits:
        pieces += (source[cursor:start], replacement)
        cursor = end
    pieces.append(source[cursor:])
    return source[:0].join(pieces)


def _reserialise(
    body: RequestBody,
    *,
    model: str,
    defaults: Mapping[str, Any],
    synonyms: Mapping[str, tuple[str, ...]],
    force: Mapping[str, Any],
    strip: Collection[str],
) -> bytes:
    values = body.values
    changed = False
    for key in strip:
        if key in values and key not in force:
            del values[key]
            changed = True
    if values.get("model") != model:
        values["model"] = model
        changed = True
    for key, value in defaults.items():
        if values.get(key) is not None or key in force or key in strip:
            continue
        others = synonyms.get(key)
        if others is not None and any(values.get(s) is not None for s in others):
            continue
        values[key] = value
        changed = True
    for key, value in force.items():
        values[key] = value
        changed = True
    if not changed:
        return body.raw
    return json.dumps(values, separators=(",", ":")).encode()
