"""Parse the flag listing of ``llama-server --help``.

llamasup keeps its own curated flag table (``flag_table.py``); this parser exists so the test
suite and ``llamasup doctor`` can compare that table with the ``--help`` of the binary actually
installed, and catch a llama.cpp upgrade that adds, renames or removes flags.

The layout relied on: an entry starts at column 0 with ``-``; its names are separated by
``", "``; the last name may be followed by a value placeholder; the description starts at
column 40 (or on the next line when the names are longer); an ``(env: NAME)`` line may follow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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


def help_names(text: str) -> set[str]:
    """All flag spellings a ``--help`` listing mentions."""
    return {name for entry in parse_help(text) for name in entry.names}
