"""Parse the flag listing of ``llama-server --help``.

llamasup keeps its own curated flag table (``table.py``); this parser exists so the test
suite and ``llamasup doctor`` can compare that table with the ``--help`` of the binary actually
installed, and catch a llama.cpp upgrade that adds, renames or removes flags.

The layout relied on: an entry starts at column 0 with ``-``; its names are separated by
``", "``; the last name may be followed by a value placeholder; the description starts at
column 40 (or on the next line when the names are longer); an ``(env: NAME)`` line may follow.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from llamasup.flags.vocabulary import FlagDef, Kind

_DESCRIPTION_COLUMN = 40
_ENV_RE = re.compile(r"\(env: ([A-Z0-9_]+)\)")


@dataclass(frozen=True)
class HelpEntry:
    names: tuple[str, ...]
    placeholder: str
    env: str | None
    description: str


def _split_head(line: str) -> tuple[str, str]:
    cut = _DESCRIPTION_COLUMN - 2
    if len(line) > cut and line[cut:_DESCRIPTION_COLUMN].isspace():
        return line[:cut].rstrip(), line[_DESCRIPTION_COLUMN:].strip()
    return line.rstrip(), ""


def _parse_head(head: str) -> tuple[tuple[str, ...], str]:
    names: list[str] = []
    placeholder = ""
    for piece in re.split(r",\s+", head):
        name, _, rest = piece.partition(" ")
        if not name.startswith("-"):
            # a comma inside a placeholder ("N0, N1"); belongs to the placeholder
            placeholder = f"{placeholder}, {piece}" if placeholder else piece
            continue
        names.append(name)
        if rest:
            placeholder = rest.strip()
    return tuple(names), placeholder


def parse_help(text: str) -> list[HelpEntry]:
    """Every flag entry in a ``--help`` listing, in order."""
    entries: list[HelpEntry] = []
    current: dict[str, object] | None = None
    description: list[str] = []

    def flush() -> None:
        if current is None:
            return
        body = " ".join(description)
        env_match = _ENV_RE.search(body)
        entries.append(
            HelpEntry(
                names=current["names"],  # type: ignore[arg-type]
                placeholder=str(current["placeholder"]),
                env=env_match.group(1) if env_match else None,
                description=body,
            )
        )

    for line in text.splitlines():
        if line.startswith("-") and not line.startswith("-----"):
            flush()
            head, desc = _split_head(line)
            names, placeholder = _parse_head(head)
            current = {"names": names, "placeholder": placeholder}
            description = [desc] if desc else []
        elif current is not None and line.startswith(" " * 8):
            description.append(line.strip())
        elif line.startswith("-----"):
            flush()
            current = None
            description = []
    flush()
    return entries


@dataclass(frozen=True)
class TableDrift:
    """Where a ``--help`` listing and llamasup's flag table disagree (spellings, sorted)."""

    unmodelled: tuple[str, ...]  # the binary has them, the table does not
    missing: tuple[str, ...]  # the table has them (and expects them to exist), the binary not
    arity: tuple[str, ...]  # one of the two takes a value, the other says it is a switch

    def __bool__(self) -> bool:
        return bool(self.unmodelled or self.missing or self.arity)


def table_drift(entries: Sequence[HelpEntry], table: Sequence[FlagDef]) -> TableDrift:
    """Compare a parsed ``--help`` with a flag table.

    Flags the table marks REMOVED are not expected in the help: llama.cpp lists them only for
    a while, and the table keeps them to refuse them with their replacement.
    """
    takes_value = {
        spelling: flag.value.arity > 0 and spelling not in flag.negations
        for flag in table
        for spelling in flag.spellings
    }
    expected = {s for flag in table if flag.kind is not Kind.REMOVED for s in flag.spellings}
    in_help = {name: bool(entry.placeholder) for entry in entries for name in entry.names}
    return TableDrift(
        unmodelled=tuple(sorted(set(in_help) - set(takes_value))),
        missing=tuple(sorted(expected - set(in_help))),
        arity=tuple(
            sorted(
                n for n, value in in_help.items() if n in takes_value and takes_value[n] != value
            )
        ),
    )
