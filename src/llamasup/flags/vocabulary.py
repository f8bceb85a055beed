"""The vocabulary of the flag model: what a llama-server flag is, and the kinds llamasup assigns.

The table itself is in ``table.py``; parsing and merging is in ``flagset.py``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    """Who may set a flag, and whether it changes the process or only each request."""

    #: llamasup sets it (or it would stop the server from serving): refused in every layer
    OWNED = "owned"
    #: removed from llama.cpp; refused everywhere with the upstream's replacement hint
    REMOVED = "removed"
    #: reaches files, the network or downloads: allowed only in trusted sections (server, models)
    TRUSTED = "trusted"
    #: a sampling/generation default with a JSON request field: can be applied per request
    REQUEST = "request"
    #: everything else: part of the process identity
    LOAD = "load"


#: llama-server parses integer flags into a C ``int``: anything outside makes it exit
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


class ValueType(enum.Enum):
    SWITCH = "switch"  # no value
    NEGATABLE = "negatable"  # no value; a --no-X spelling turns it off
    INT = "int"
    FLOAT = "float"
    STR = "str"
    CHOICE = "choice"
    CACHE_TYPE = "cache-type"
    ON_OFF = "on|off"
    ON_OFF_AUTO = "on|off|auto"
    BOOL01 = "0|1"
    LAYERS = "layers"  # an int, 'auto' or 'all'
    JSON = "json"
    LOGIT_BIAS = "logit-bias"  # TOKEN_ID(+/-)BIAS
    PAIR = "pair"  # two values

    @property
    def arity(self) -> int:
        if self in (ValueType.SWITCH, ValueType.NEGATABLE):
            return 0
        return 2 if self is ValueType.PAIR else 1


class Layer(enum.Enum):
    """Where a flag came from; later layers override earlier ones."""

    BASE = "server.base_args"
    MODEL = "model args"
    AGENT = "agent flags"
    HEADER = "X-Agent-Flags header"

    @property
    def trusted(self) -> bool:
        return self in (Layer.BASE, Layer.MODEL)


@dataclass(frozen=True)
class FlagDef:
    """One llama-server flag, under its canonical long name."""

    name: str
    aliases: tuple[str, ...]
    negations: tuple[str, ...]
    value: ValueType
    kind: Kind
    choices: tuple[str, ...] = ()
    repeatable: bool = False
    field: str = ""  # the JSON request field of a REQUEST flag
    why: str = ""  # why an OWNED/REMOVED flag is refused
    env: str = ""  # the environment variable llama-server reads for it
    #: the least integer value llama-server accepts (INT/LAYERS), and values below it that
    #: still mean something (``0`` = from the model)
    minimum: int | None = None
    also: tuple[int, ...] = ()

    @property
    def spellings(self) -> tuple[str, ...]:
        return (self.name, *self.aliases, *self.negations)


CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


def flag(
    names: str,
    value: ValueType,
    *,
    neg: str = "",
    kind: Kind = Kind.LOAD,
    choices: str = "",
    repeat: bool = False,
    field: str = "",
    why: str = "",
    env: str = "",
    minimum: int | None = None,
    also: tuple[int, ...] = (),
) -> FlagDef:
    """Compact constructor for the table: ``names`` is the canonical name, then its aliases."""
    canonical, *aliases = names.split()
    choice_tuple: tuple[str, ...]
    if value is ValueType.CACHE_TYPE:
        choice_tuple = CACHE_TYPES
    elif value is ValueType.ON_OFF:
        choice_tuple = ("on", "off")
    elif value is ValueType.ON_OFF_AUTO:
        choice_tuple = ("on", "off", "auto")
    else:
        choice_tuple = tuple(choices.split())
    return FlagDef(
        name=canonical,
        aliases=tuple(aliases),
        negations=tuple(neg.split()),
        value=value,
        kind=kind,
        choices=choice_tuple,
        repeatable=repeat,
        field=field,
        why=why,
        env=env,
        minimum=minimum,
        also=also,
    )
