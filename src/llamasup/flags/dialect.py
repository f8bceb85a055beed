"""The flags of one llama-server binary, and llamasup's canonical argv in that binary's words.

llamasup's table describes build b11434 and its spellings are canonical: profiles, keys and
merges use them, so a sidecar's key does not change with the spelling a user wrote. What one
binary accepts comes from its own ``--help``: at launch the canonical argv is translated to
it (an older build gets ``--no-mmap`` for ``--load-mode none``), a flag it lacks is an error
naming the binary and its version, and a flag it lists that the table does not know is
accepted as a load-time flag in the trusted layers (a newer build's flag).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from llamasup.errors import FlagError
from llamasup.flags.flagset import lookup
from llamasup.flags.helptext import parse_help
from llamasup.flags.vocabulary import FlagDef, Kind, ValueType

#: ``--load-mode`` values as older builds spelled them, most specific first per value; each
#: alternative is used only if the binary knows every flag in it
_LOAD_MODE: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "auto": ((),),
    "none": (("--no-mmap",),),
    "mmap": (("--mmap",), ()),
    "mlock": (("--no-mmap", "--mlock"),),
    "mmap+mlock": (("--mmap", "--mlock"), ("--mlock",)),
    "dio": (("--direct-io",), ("-dio",)),
}


@dataclass(frozen=True)
class BinaryFlags:
    """Every spelling a binary's ``--help`` lists, with whether it takes a value."""

    binary: str
    version: str | None
    #: spelling -> its value placeholder ("" for a switch)
    spellings: Mapping[str, str]
    #: spelling -> all the spellings of its entry (long name first)
    entries: Mapping[str, tuple[str, ...]]

    @classmethod
    def from_help(cls, binary: str, version: str | None, text: str) -> BinaryFlags:
        spellings: dict[str, str] = {}
        entries: dict[str, tuple[str, ...]] = {}
        for entry in parse_help(text):
            names = tuple(sorted(entry.names, key=lambda n: (not n.startswith("--"), n)))
            for name in entry.names:
                spellings[name] = entry.placeholder
                entries[name] = names
        return cls(binary, version, spellings, entries)

    def knows(self, spelling: str) -> bool:
        return spelling in self.spellings

    def describe(self) -> str:
        version = (self.version or "unknown version").removeprefix("version: ")
        return f"{self.binary} ({version})"

    def unknown_flag(self, spelling: str) -> FlagDef | None:
        """A flag this binary lists and llamasup's table does not: a load-time flag."""
        if spelling not in self.spellings or lookup(spelling) is not None:
            return None
        names = self.entries[spelling]
        value = ValueType.STR if self.spellings[spelling] else ValueType.SWITCH
        return FlagDef(name=names[0], aliases=names[1:], negations=(), value=value, kind=Kind.LOAD)


_parsed: dict[tuple[str, str | None, int], BinaryFlags] = {}


def binary_flags(info: BinaryInfoLike) -> BinaryFlags:
    """``BinaryFlags`` of a binary's ``--help`` text, parsed once per text."""
    key = (info.path, info.version, hash(info.help))
    found = _parsed.get(key)
    if found is None:
        found = _parsed[key] = BinaryFlags.from_help(info.path, info.version, info.help)
    return found


class BinaryInfoLike(Protocol):
    """What a binary says about itself (``llamasup.runtime.binary_info.BinaryInfo``)."""

    @property
    def path(self) -> str: ...

    @property
    def version(self) -> str | None: ...

    @property
    def help(self) -> str: ...


def for_binary(args: Sequence[str], binary: BinaryFlags) -> list[str]:
    """``args`` (canonical, as a spec holds them) as ``binary`` accepts them.

    Raises :class:`FlagError` for a flag the binary has no spelling for, naming the binary.
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        flag = lookup(word)
        if flag is None:  # a flag the table does not know: accepted because a binary lists it
            if not binary.knows(word):
                raise FlagError(
                    word, f"{binary.describe()} has no {word}; remove it, or run one that has it"
                )
            arity = 1 if binary.spellings.get(word) else 0
            out.extend(args[i : i + 1 + arity])
            i += 1 + arity
            continue
        arity = flag.value.arity
        values = list(args[i + 1 : i + 1 + arity])
        i += 1 + arity
        out.extend(_translate(word, flag, values, binary))
    return out


def _translate(word: str, flag: FlagDef, values: list[str], binary: BinaryFlags) -> list[str]:
    if binary.knows(word):
        return [word, *values]
    # another spelling of the same setting (a negation only for a negation)
    same = flag.negations if word in flag.negations else (flag.name, *flag.aliases)
    for spelling in same:
        if binary.knows(spelling):
            return [spelling, *values]
    if flag.name == "--load-mode" and values:
        for alternative in _LOAD_MODE.get(values[0], ()):
            if all(binary.knows(part) for part in alternative):
                return list(alternative)
    if flag.name == "--flash-attn" and values and binary.knows("-fa"):
        return ["-fa"] if values[0] == "on" else []  # a switch in older builds
    # the value matters where the binary has the setting but not that value's spelling
    valued = values and flag.name in ("--load-mode", "--flash-attn")
    raise FlagError(
        word,
        f"{binary.describe()} has no {word}"
        + (f" {' '.join(values)}" if valued else "")
        + "; remove it, or run a llama-server that has it",
    )
