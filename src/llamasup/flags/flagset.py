"""Parse, check, normalise, merge and render llama-server flags.

Layers merge as ``server.base_args`` < model ``args`` < agent ``flags`` < ``X-Agent-Flags``:
a later layer replaces the same canonical flag (or its negation) of an earlier one and drops
nothing else. Within one layer, giving a flag twice with different values is an error.

Normalisation makes equal configurations compare equal: aliases become the canonical long name
(``-c`` → ``--ctx-size``), values take one spelling (``--flash-attn 1`` → ``on``, ``--temp 1`` →
``1.0``), and a few legacy spellings that this llama-server build no longer accepts are
translated (bare ``-fa`` → ``--flash-attn on``; ``--no-mmap``/``--mmap``/``--mlock`` →
``--load-mode``).
"""

from __future__ import annotations

import difflib
import json
import math
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from llamasup.errors import FlagError
from llamasup.flags.table import TABLE
from llamasup.flags.vocabulary import INT_MAX, INT_MIN, FlagDef, Kind, Layer, ValueType

FlagValue = bool | str | tuple[str, ...]

_TRUTHY = frozenset({"on", "enabled", "true", "1"})
_FALSEY = frozenset({"off", "disabled", "false", "0"})
_AUTOY = frozenset({"auto", "-1"})
_LOGIT_BIAS_RE = re.compile(r"^\d+(-inf|[+-]\d+(\.\d+)?)$")
#: characters never accepted from a request header, even though llamasup never uses a shell
_HEADER_FORBIDDEN = re.compile(r"[;|&$`<>\\\x00-\x1f\x7f]")
_HEADER_MAX_LEN = 1024

#: legacy spellings → (canonical flag, load mode); combined in one layer they merge
_LEGACY_LOAD_MODE = {
    "--no-mmap": "none",
    "--mmap": "mmap",
    "--mlock": "mlock",
    "--direct-io": "dio",
    "-dio": "dio",
}
_LOAD_MODE_COMBOS = {
    frozenset({"none", "mlock"}): "mlock",
    frozenset({"mmap", "mlock"}): "mmap+mlock",
}
#: order-sensitive flags rendered first (llama-server reads --chat-template after --jinja)
_RENDER_FIRST = ("--jinja",)


@dataclass(frozen=True)
class FlagSetting:
    """One flag as set in a layer: its definition, normalised value and the spelling used."""

    flag: FlagDef
    value: FlagValue
    spelled: str

    @property
    def name(self) -> str:
        return self.flag.name

    def argv(self) -> list[str]:
        flag, value = self.flag, self.value
        if flag.value is ValueType.SWITCH:
            return [flag.name]
        if flag.value is ValueType.NEGATABLE:
            return [flag.name] if value else [_negation_long(flag)]
        if isinstance(value, tuple):
            if flag.value is ValueType.PAIR:
                return [flag.name, *value]
            return [part for item in value for part in (flag.name, item)]
        return [flag.name, str(value)]

    def request_value(self) -> Any:
        """The JSON request value of a REQUEST flag."""
        flag, value = self.flag, self.value
        vt = flag.value
        if flag.name == "--dry-sequence-breaker":
            items = value if isinstance(value, tuple) else (str(value),)
            return [] if items == ("none",) else list(items)
        if flag.name == "--reverse-prompt":
            return list(value) if isinstance(value, tuple) else [str(value)]
        if flag.name == "--samplers":
            return [part for part in str(value).split(";") if part]
        if vt is ValueType.SWITCH:
            return True
        if vt is ValueType.INT:
            return int(str(value))
        if vt is ValueType.FLOAT:
            return float(str(value))
        if vt is ValueType.JSON:
            return json.loads(str(value))
        if vt is ValueType.LOGIT_BIAS:
            items = value if isinstance(value, tuple) else (str(value),)
            return [_logit_bias_pair(item) for item in items]
        return value


def _logit_bias_pair(text: str) -> list[Any]:
    sign_at = max(text.rfind("+"), text.rfind("-"))
    token_id, sign, magnitude = int(text[:sign_at]), text[sign_at], text[sign_at + 1 :]
    if magnitude == "inf":
        return [token_id, False]  # llama-server's JSON for "never produce this token"
    bias = float(magnitude)
    return [token_id, bias if sign == "+" else -bias]


def _negation_long(flag: FlagDef) -> str:
    longs = [n for n in flag.negations if n.startswith("--")]
    return longs[0] if longs else flag.negations[0]


@dataclass(frozen=True)
class FlagSet:
    """An immutable set of flags keyed by canonical name, in first-set order."""

    settings: tuple[FlagSetting, ...] = ()

    @property
    def by_name(self) -> Mapping[str, FlagSetting]:
        return {s.name: s for s in self.settings}

    def __contains__(self, name: object) -> bool:
        return any(s.name == name for s in self.settings)

    def get(self, name: str) -> FlagSetting | None:
        for setting in self.settings:
            if setting.name == name:
                return setting
        return None

    def value(self, name: str) -> FlagValue | None:
        setting = self.get(name)
        return None if setting is None else setting.value

    def __len__(self) -> int:
        return len(self.settings)

    def without_kind(self, *kinds: Kind) -> FlagSet:
        return FlagSet(tuple(s for s in self.settings if s.flag.kind not in kinds))

    def argv(self) -> tuple[str, ...]:
        """Canonical argv: order-sensitive flags first, then by canonical name."""

        def order(s: FlagSetting) -> tuple[int, str]:
            first = s.name in _RENDER_FIRST
            return (0 if first else 1, s.name)

        return tuple(part for s in sorted(self.settings, key=order) for part in s.argv())

    def request_defaults(self) -> dict[str, Any]:
        """JSON request fields of the REQUEST flags in this set."""
        return {
            s.flag.field: s.request_value() for s in self.settings if s.flag.kind is Kind.REQUEST
        }


def merge(*layers: FlagSet) -> FlagSet:
    """Later layers replace the same canonical flag of earlier ones; nothing else is dropped."""
    merged: dict[str, FlagSetting] = {}
    for layer in layers:
        for setting in layer.settings:
            merged[setting.name] = setting
    return FlagSet(tuple(merged.values()))


@cache
def _index() -> dict[str, FlagDef]:
    index: dict[str, FlagDef] = {}
    for definition in TABLE:
        for spelling in definition.spellings:
            index[spelling] = definition
    return index


def canonical_spelling(token: str) -> str:
    """llama-server accepts ``--ctx_size`` for ``--ctx-size``; so does llamasup."""
    if token.startswith("--"):
        return token.replace("_", "-")
    return token


def lookup(spelling: str) -> FlagDef | None:
    return _index().get(canonical_spelling(spelling))


def flag_named(name: str) -> FlagDef:
    definition = lookup(name)
    if definition is None:
        raise KeyError(name)
    return definition


def tokenize(value: str | Sequence[object] | None) -> list[str]:
    """Turn a profile's flag list or string into argv tokens.

    Strings split like a POSIX shell would split them, without a shell. In lists, YAML scalars
    become strings; YAML booleans (an unquoted ``on``) become ``on``/``off``.
    """
    if value is None:
        return []
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise FlagError(value, f"cannot split into arguments: {exc}") from exc
    tokens: list[str] = []
    for item in value:
        if isinstance(item, bool):
            tokens.append("on" if item else "off")
        else:
            tokens.append(str(item))
    return tokens


def _normalize(flag: FlagDef, raw: str, spelled: str) -> str:
    vt = flag.value
    lowered = raw.strip().lower()
    if vt is ValueType.INT:
        try:
            integer = int(raw, 10)
        except ValueError:
            raise FlagError(spelled, f"expects an integer, got {raw!r}") from None
        return str(_in_range(flag, integer, spelled))
    if vt is ValueType.FLOAT:
        try:
            number = float(raw)
        except ValueError:
            raise FlagError(spelled, f"expects a number, got {raw!r}") from None
        if not math.isfinite(number):
            raise FlagError(spelled, f"expects a finite number, got {raw!r}")
        return repr(number)
    if vt in (ValueType.ON_OFF, ValueType.ON_OFF_AUTO):
        if lowered in _TRUTHY:
            return "on"
        if lowered in _FALSEY:
            return "off"
        if vt is ValueType.ON_OFF_AUTO and lowered in _AUTOY:
            return "auto"
        raise FlagError(spelled, f"expects one of {', '.join(flag.choices)}, got {raw!r}")
    if vt is ValueType.BOOL01:
        if lowered in _TRUTHY:
            return "1"
        if lowered in _FALSEY:
            return "0"
        raise FlagError(spelled, f"expects 0 or 1, got {raw!r}")
    if vt is ValueType.CACHE_TYPE or vt is ValueType.CHOICE:
        candidate = lowered if vt is ValueType.CACHE_TYPE else raw
        if candidate not in flag.choices:
            raise FlagError(spelled, f"expects one of {', '.join(flag.choices)}, got {raw!r}")
        return candidate
    if vt is ValueType.LAYERS:
        if lowered in ("auto", "all"):
            return lowered
        try:
            layers = int(raw, 10)
        except ValueError:
            raise FlagError(
                spelled, f"expects a layer count, 'auto' or 'all', got {raw!r}"
            ) from None
        return str(_in_range(flag, layers, spelled))
    if vt is ValueType.JSON:
        try:
            return json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
        except ValueError:
            raise FlagError(spelled, f"expects JSON, got {raw!r}") from None
    if vt is ValueType.LOGIT_BIAS:
        if not _LOGIT_BIAS_RE.match(raw):
            raise FlagError(
                spelled, f"expects TOKEN_ID+BIAS, TOKEN_ID-BIAS or TOKEN_ID-inf, got {raw!r}"
            )
        return raw
    if vt is ValueType.PAIR:
        return str(int(raw, 10)) if raw.lstrip("-").isdigit() else raw
    return raw


def _in_range(flag: FlagDef, number: int, spelled: str) -> int:
    """``number`` if llama-server accepts it for ``flag`` (a C int, at least the flag's
    minimum), else a FlagError saying what it accepts: such a value would only crash it."""
    if number in flag.also:
        return number
    low = INT_MIN if flag.minimum is None else flag.minimum
    if low <= number <= INT_MAX:
        return number
    accepted = f"an integer from {low} to {INT_MAX}"
    if flag.also:
        accepted += f" (or {', '.join(map(str, flag.also))})"
    raise FlagError(spelled, f"expects {accepted}, got {number}")


def _check_allowed(flag: FlagDef, spelled: str, layer: Layer, allow_load: frozenset[str]) -> None:
    if flag.kind is Kind.OWNED:
        raise FlagError(spelled, f"llamasup sets this flag itself: {flag.why}")
    if flag.kind is Kind.REMOVED:
        raise FlagError(spelled, flag.why)
    if flag.kind is Kind.TRUSTED and not layer.trusted:
        raise FlagError(
            spelled,
            f"reaches files, the network or downloads, so it is refused in {layer.value}; "
            "set it in server.base_args or a model's args",
        )
    if layer is Layer.HEADER and flag.kind is Kind.LOAD and flag.name not in allow_load:
        allowed = ", ".join(sorted(allow_load)) or "none"
        raise FlagError(
            spelled,
            f"load-time flag not allowed in {layer.value}; allowed: request-time (sampling) "
            f"flags and these load-time flags: {allowed}",
        )


def _unknown(token: str) -> FlagError:
    close = difflib.get_close_matches(canonical_spelling(token), list(_index()), n=1, cutoff=0.8)
    hint = f"; did you mean {close[0]}?" if close else ""
    return FlagError(token, f"unknown llama-server flag{hint}")


@dataclass(frozen=True)
class ParseResult:
    flags: FlagSet
    errors: tuple[FlagError, ...]

    def raise_first(self) -> FlagSet:
        if self.errors:
            raise self.errors[0]
        return self.flags


class _LayerBuilder:
    """Accumulates one layer's settings, detecting conflicting duplicates."""

    def __init__(self, layer: Layer) -> None:
        self.layer = layer
        self.settings: dict[str, FlagSetting] = {}
        self.legacy_modes: set[str] = set()

    def add(self, setting: FlagSetting) -> None:
        name = setting.name
        previous = self.settings.get(name)
        if previous is None:
            self.settings[name] = setting
            return
        if setting.flag.repeatable:
            merged = _as_tuple(previous.value) + _as_tuple(setting.value)
            self.settings[name] = FlagSetting(setting.flag, merged, previous.spelled)
            return
        if previous.value != setting.value:
            raise FlagError(
                setting.spelled,
                f"conflicts with {previous.spelled} earlier in {self.layer.value} "
                f"({_show(previous.value)} vs {_show(setting.value)})",
            )

    def add_legacy_load_mode(self, mode: str, spelled: str) -> None:
        self.legacy_modes.add(mode)
        combined = _LOAD_MODE_COMBOS.get(frozenset(self.legacy_modes))
        if combined is not None:
            self.settings.pop("--load-mode", None)
            mode = combined
        self.add(FlagSetting(flag_named("--load-mode"), mode, spelled))


def _as_tuple(value: FlagValue) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    return (str(value),)


def _show(value: FlagValue) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return " ".join(value)
    return value


#: a flag llamasup's table does not know, as the binary that will run it describes it
ExtraFlags = Callable[[str], FlagDef | None]


def parse(
    tokens: Iterable[str],
    layer: Layer,
    *,
    allow_load: frozenset[str] = frozenset(),
    extra: ExtraFlags | None = None,
) -> ParseResult:
    """Parse one layer's tokens, collecting every error rather than stopping at the first.

    ``extra``: flags the binary knows beyond the table, accepted in trusted layers only."""
    items = list(tokens)
    builder = _LayerBuilder(layer)
    errors: list[FlagError] = []
    cursor = _Cursor(items)
    while cursor.pos < len(items):
        token = cursor.take()
        try:
            _consume(token, cursor, builder, allow_load=allow_load, extra=extra)
        except FlagError as exc:
            errors.append(exc)
    return ParseResult(FlagSet(tuple(builder.settings.values())), tuple(errors))


class _Cursor:
    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.pos = 0

    def peek(self) -> str | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def take(self) -> str:
        item = self.items[self.pos]
        self.pos += 1
        return item


def _consume(
    word: str,
    cursor: _Cursor,
    builder: _LayerBuilder,
    *,
    allow_load: frozenset[str],
    extra: ExtraFlags | None = None,
) -> None:
    """Consume one flag and its values (the cursor advances even when the flag is refused).

    Values are consumed before the flag is judged, so a refused flag yields one error, not one
    more for each of its values.
    """
    layer = builder.layer
    if not word.startswith("-") or word == "-":
        raise FlagError(word, "unexpected value; values must follow the flag they belong to")
    has_inline = word.startswith("--") and "=" in word
    spelled, _, inline = word.partition("=") if has_inline else (word, "", "")
    name = canonical_spelling(spelled)
    if name in _LEGACY_LOAD_MODE:
        _check_allowed(flag_named("--load-mode"), spelled, layer, allow_load)
        builder.add_legacy_load_mode(_LEGACY_LOAD_MODE[name], spelled)
        return
    flag = lookup(name)
    if flag is None and extra is not None and layer.trusted:
        flag = extra(spelled)
    if flag is None:
        # skip what looks like this unknown flag's value, so one typo yields one error
        following = cursor.peek()
        if not has_inline and following is not None and not following.startswith("-"):
            cursor.take()
        raise _unknown(spelled)
    arity = flag.value.arity
    values: list[str] = [inline] if has_inline else []
    if arity == 0:
        _check_allowed(flag, spelled, layer, allow_load)
        if has_inline:
            raise FlagError(spelled, "takes no value")
        builder.add(FlagSetting(flag, name not in flag.negations, spelled))
        return
    if flag.name == "--flash-attn" and not values and not _next_is_value(cursor.peek()):
        # bare -fa: older llama.cpp builds took it as a switch; this one needs a value
        _check_allowed(flag, spelled, layer, allow_load)
        builder.add(FlagSetting(flag, "on", spelled))
        return
    while len(values) < arity and cursor.peek() is not None:
        values.append(cursor.take())
    _check_allowed(flag, spelled, layer, allow_load)
    if len(values) < arity:
        raise FlagError(spelled, f"expects {arity} value{'s' if arity > 1 else ''}")
    normalized = tuple(_normalize(flag, raw, spelled) for raw in values)
    if flag.value is ValueType.PAIR or flag.repeatable:
        builder.add(FlagSetting(flag, normalized, spelled))
    else:
        builder.add(FlagSetting(flag, normalized[0], spelled))


def _next_is_value(following: str | None) -> bool:
    if following is None:
        return False
    candidate = following.lower()
    return candidate in _TRUTHY | _FALSEY | _AUTOY or not candidate.startswith("-")


def parse_header(header: str, *, allow_load: frozenset[str] = frozenset()) -> FlagSet:
    """Parse an ``X-Agent-Flags`` header value; raise the first problem."""
    if len(header) > _HEADER_MAX_LEN:
        raise FlagError("X-Agent-Flags", f"longer than {_HEADER_MAX_LEN} characters")
    bad = _HEADER_FORBIDDEN.search(header)
    if bad:
        raise FlagError(
            "X-Agent-Flags", f"character {bad.group()!r} is not allowed in request flags"
        )
    return parse(tokenize(header), Layer.HEADER, allow_load=allow_load).raise_first()


def env_owned_by_llamasup(name: str) -> FlagDef | None:
    """The OWNED flag an environment variable would set, if any (``LLAMA_ARG_HOST`` ...)."""
    for definition in TABLE:
        if definition.env == name and definition.kind in (Kind.OWNED, Kind.REMOVED):
            return definition
    return None
