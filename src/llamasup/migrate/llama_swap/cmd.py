"""llama-swap's ``cmd`` strings: comment lines, continuations, words, and flags.

llama-swap runs ``cmd`` without a shell: it drops lines whose first non-blank character is
``#``, turns a trailing backslash into a space, and splits the rest like a POSIX shell would.
Macros are already applied here (``expand``). ``${env.NAME}`` is read from the environment;
an environment reference is kept as written whenever it stays one argument, so the profile
keeps reading the variable (llamasup supports the same ``${env.NAME}`` syntax); the expanded
value is used only to understand the command.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llamasup.flags.flagset import FlagSetting, canonical_spelling, lookup, parse
from llamasup.flags.vocabulary import Kind, Layer

ENV_REF = re.compile(r"\$\{env\.([A-Za-z_][A-Za-z0-9_]*)\}")
MACRO_REF = re.compile(r"\$\{([A-Za-z0-9_-]+)\}")
PORT = "${PORT}"
_LEGACY = frozenset({"--no-mmap", "--mmap", "--mlock", "--direct-io", "-dio"})
_FA_VALUES = frozenset(
    {"on", "off", "auto", "enabled", "disabled", "true", "false", "1", "0", "-1"}
)
_SERVER_NAME = re.compile(r"^llama-server([-_.][^/\\]*)?$")


def macro_text(value: Any) -> str:
    """A macro value as llama-swap prints it into a string (Go's ``%v``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def strip_comments(text: str) -> str:
    """Drop lines whose first non-blank character is ``#`` (before macros, as llama-swap does)."""
    return "\n".join(line for line in text.split("\n") if not line.strip().startswith("#"))


def clean_command(text: str) -> str:
    """Drop comment lines again (macros may bring some) and join backslash continuations."""
    kept = []
    for line in strip_comments(text).split("\n"):
        stripped = line.strip()
        kept.append(stripped[:-1] + " " if stripped.endswith("\\") else line)
    return "\n".join(kept)


def expand_env(text: str, environ: Mapping[str, str], missing: set[str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            missing.add(name)
            return ""
        return environ[name]

    return ENV_REF.sub(value, text)


@dataclass(frozen=True)
class Word:
    """One argument: as written (environment references kept) and as the process sees it."""

    raw: str
    value: str


def split_words(
    text: str, environ: Mapping[str, str], missing: set[str]
) -> tuple[list[Word], bool]:
    """The arguments of a cleaned command; True if references had to be expanded in place.

    A reference whose value holds blanks or quotes splits into several arguments, so it cannot
    stay a reference; then every argument is written with its value.
    """
    expanded = shlex.split(expand_env(text, environ, missing))
    raw = shlex.split(text)
    if len(raw) == len(expanded) and all(
        expand_env(r, environ, set()) == e for r, e in zip(raw, expanded, strict=True)
    ):
        return [Word(r, e) for r, e in zip(raw, expanded, strict=True)], False
    return [Word(e, e) for e in expanded], True


@dataclass
class Command:
    """A command split into a leading ``env K=V`` prefix, the program, and its arguments."""

    env: list[tuple[str, Word]]
    program: Word
    args: list[Word]

    @property
    def is_llama_server(self) -> bool:
        name = re.split(r"[/\\]", self.program.value)[-1].lower().removesuffix(".exe")
        return _SERVER_NAME.match(name) is not None

    @property
    def is_docker_llama_cpp(self) -> bool:
        name = re.split(r"[/\\]", self.program.value)[-1].lower()
        return name in ("docker", "podman") and any(
            "llama.cpp" in w.value and "server" in w.value for w in self.args
        )


def split_command(words: list[Word]) -> Command | None:
    env: list[tuple[str, Word]] = []
    rest = list(words)
    if rest and re.split(r"[/\\]", rest[0].value)[-1] == "env":
        rest = rest[1:]
        while rest and "=" in rest[0].value and not rest[0].value.startswith("-"):
            name, _, _ = rest[0].value.partition("=")
            raw_value = rest[0].raw.partition("=")[2]
            env.append((name, Word(raw_value, rest[0].value.partition("=")[2])))
            rest = rest[1:]
    if not rest:
        return None
    return Command(env, rest[0], rest[1:])


@dataclass
class Segment:
    """One flag with its values, and what the flag model made of it."""

    words: list[Word]
    setting: FlagSetting | None = None

    @property
    def raw(self) -> list[str]:
        return [w.raw for w in self.words]


@dataclass
class ServerArgs:
    """The arguments of a llama-server command as llamasup sees them."""

    path: Word | None = None
    aliases: list[str] = field(default_factory=list)
    kept: list[Segment] = field(default_factory=list)
    #: (flag, message): dropped because llamasup owns or no longer accepts the flag
    dropped: list[tuple[str, str]] = field(default_factory=list)
    #: reasons this cannot become a llama-server model (unknown flags, bad values, ...)
    failures: list[str] = field(default_factory=list)


def flag_segments(words: Sequence[Word]) -> list[list[Word]]:
    """Group arguments by flag using the flag table's arity (one stray value per segment)."""
    segments: list[list[Word]] = []
    i = 0
    while i < len(words):
        word = words[i].value
        following = words[i + 1].value if i + 1 < len(words) else None
        arity = 0
        if word.startswith("-") and word != "-" and not (word.startswith("--") and "=" in word):
            name = canonical_spelling(word)
            definition = lookup(name)
            if name in _LEGACY:
                arity = 0
            elif definition is None:
                arity = 1 if following is not None and not following.startswith("-") else 0
            elif definition.name == "--flash-attn":
                takes = following is not None and (
                    following.lower() in _FA_VALUES or not following.startswith("-")
                )
                arity = 1 if takes else 0
            else:
                arity = definition.value.arity
        segments.append(list(words[i : i + 1 + arity]))
        i += 1 + arity
    return segments


def _value_word(segment: list[Word]) -> Word | None:
    first = segment[0]
    if first.value.startswith("--") and "=" in first.value:
        return Word(first.raw.partition("=")[2], first.value.partition("=")[2])
    return segment[1] if len(segment) > 1 else None


def server_args(args: Sequence[Word]) -> ServerArgs:
    result = ServerArgs()
    for segment in flag_segments(args):
        head = segment[0].value
        definition = lookup(head.partition("=")[0] if head.startswith("--") else head)
        value = _value_word(segment)
        name = definition.name if definition is not None else head
        if name in ("--port", "--host", "--model", "--alias") and value is not None:
            _owned_value(result, name, value)
            continue
        parsed = parse([w.value for w in segment], Layer.MODEL)
        if parsed.errors:
            if definition is not None and definition.kind in (Kind.OWNED, Kind.REMOVED):
                result.dropped.append((name, str(parsed.errors[0])))
            else:
                result.failures.append(str(parsed.errors[0]))
            continue
        if any(PORT in w.value or "${MODEL_ID}" in w.value for w in segment):
            result.failures.append(f"{' '.join(w.raw for w in segment)}: ${{PORT}} outside --port")
            continue
        setting = parsed.flags.settings[0] if parsed.flags.settings else None
        result.kept.append(Segment(list(segment), setting))
    whole = parse([w.value for s in result.kept for w in s.words], Layer.MODEL)
    result.failures += [str(e) for e in whole.errors]
    return result


def _owned_value(result: ServerArgs, name: str, value: Word) -> None:
    if name == "--model":
        result.path = value
    elif name == "--alias":
        result.aliases += [a.strip() for a in value.value.split(",") if a.strip()]
    elif name == "--port" and value.value != PORT:
        result.dropped.append(
            (name, f"--port {value.value} dropped: llamasup gives each sidecar a port")
        )
    elif name == "--host" and not _loopback(value.value):
        result.dropped.append(
            (
                name,
                f"--host {value.value} dropped: sidecars listen on loopback behind llamasup, so "
                "clients that reached this llama-server directly must go through llamasup",
            )
        )


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
