"""``llamasup import sidecar-env``: llama-sidecar's environment → an equivalent profile set.

llama-sidecar (the earlier Go daemon) was configured by environment variables only. Every
setting is written explicitly, defaults included, because those defaults lived in the daemon
and llamasup's differ (it has no built-in base args, and a 300s request wait).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from llamasup.flags.flagset import lookup, parse
from llamasup.flags.vocabulary import Kind, Layer
from llamasup.migrate.draft import (
    Draft,
    Entry,
    InputError,
    duration,
    log_level,
    sanitize_id,
    valid_alias,
    valid_id,
)
from llamasup.migrate.llama_swap.cmd import Word, flag_segments

DEFAULTS = {
    "LLAMA_SIDECAR_BIND": "127.0.0.1:8402",
    "PORT_RANGE": "8500-8599",
    "MAX_SIDECARS": "2",
    "LOG_LEVEL": "info",
    "BASE_ARGS": '["-ngl","999","-c","32768","--flash-attn","on","--no-mmap"]',
    "HEALTH_TIMEOUT_SECONDS": "60",
    "HEALTH_INTERVAL_SECONDS": "30",
}
REQUIRED = ("LLAMA_SERVER_BIN", "MODEL_DIR_MAP_FILE")
KNOWN = frozenset(DEFAULTS) | frozenset(REQUIRED)
#: load-time flags agents commonly sent in X-Agent-Flags (llama-sidecar accepted any valid one)
HEADER_LOAD_FLAGS = (
    "--ctx-size", "--cache-type-k", "--cache-type-v", "--flash-attn", "--n-gpu-layers",
    "--batch-size", "--ubatch-size", "--parallel",
)  # fmt: skip
_BIND = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):(\d{1,5})$")
_RANGE = re.compile(r"^\s*(\d{1,5})\s*-\s*(\d{1,5})\s*$")

ReadBytes = Callable[[Path], bytes]


def import_sidecar_env(
    env: Mapping[str, str], *, source: str, read_bytes: ReadBytes = Path.read_bytes
) -> Draft:
    """Convert llama-sidecar's settings; raises ``InputError`` listing every unusable one."""
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        raise InputError(
            [
                f"{name} is not set; llama-sidecar required it (run this where its environment "
                "is loaded, or pass --env-file)"
                for name in missing
            ]
        )
    draft = Draft(source)
    problems: list[str] = []

    def setting(name: str) -> tuple[str, str]:
        """The value and, for a default, a note saying where it came from."""
        if env.get(name, "").strip():
            return env[name].strip(), f"from {name}"
        return DEFAULTS[name], f"llama-sidecar's default for {name}"

    _listen(draft, *setting("LLAMA_SIDECAR_BIND"), problems)
    draft.set_server("binary", env["LLAMA_SERVER_BIN"], "from LLAMA_SERVER_BIN")
    ports, note = setting("PORT_RANGE")
    match = _RANGE.match(ports)
    if match is None or int(match.group(1)) > int(match.group(2)):
        problems.append(f"PORT_RANGE: {ports!r} is not LOW-HIGH")
    else:
        draft.set_server("ports", f"{match.group(1)}-{match.group(2)}", note)
    draft.set_server("max_sidecars", _count(*setting("MAX_SIDECARS"), "MAX_SIDECARS", problems))
    draft.server_notes.setdefault("max_sidecars", []).append(
        "least recently used idle sidecars are evicted beyond it, as before"
    )
    _base_args(draft, *setting("BASE_ARGS"), problems)
    timeout, note = setting("HEALTH_TIMEOUT_SECONDS")
    seconds = _count(timeout, note, "HEALTH_TIMEOUT_SECONDS", problems)
    draft.set_server(
        "health_timeout",
        duration(seconds),
        f"{note}: how long a start may take; llamasup also lets a request wait that long",
    )
    draft.set_server("start_timeout", duration(seconds))
    interval, note = setting("HEALTH_INTERVAL_SECONDS")
    every = _count(interval, note, "HEALTH_INTERVAL_SECONDS", problems)
    draft.set_server("health_interval", duration(every), note)
    level_text, note = setting("LOG_LEVEL")
    level = log_level(level_text)
    if level is None:
        draft.warn("LOG_LEVEL", f"{level_text!r} is not debug/info/warn/error; not imported")
    else:
        draft.set_server("log_level", level, note)
    _agent_flags(draft)
    _models(draft, Path(env["MODEL_DIR_MAP_FILE"]), read_bytes, problems)
    for name in sorted(env):
        if name.startswith("LLAMA_SIDECAR_") and name not in KNOWN:
            draft.warn(name, "unknown llama-sidecar setting; not imported")
    if problems:
        raise InputError(problems)
    return draft


def _listen(draft: Draft, bind: str, note: str, problems: list[str]) -> None:
    match = _BIND.match(bind)
    if match is None:
        problems.append(f"LLAMA_SIDECAR_BIND: {bind!r} is not HOST:PORT")
        return
    host = match.group(1) or "0.0.0.0"  # noqa: S104  (Go's ":8402" listens on every interface)
    draft.set_server("listen", f"{host}:{match.group(2)}", note)
    if host.strip("[]") not in ("127.0.0.1", "::1", "localhost"):
        draft.set_server("allow_public_listen", True)
        draft.warn(
            "LLAMA_SIDECAR_BIND",
            f"{bind} is reachable from the network and llama-sidecar had no API keys, so "
            "allow_public_listen is set; add server.api_keys and drop it",
        )


def _count(text: str, note: str, name: str, problems: list[str]) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        problems.append(f"{name}: {text!r} is not a whole number of at least 1 ({note})")
        return 1
    return value


def _base_args(draft: Draft, text: str, note: str, problems: list[str]) -> None:
    items: object
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except ValueError as exc:
            problems.append(f"BASE_ARGS: not a JSON array of strings: {exc}")
            return
    else:  # llama-sidecar wanted JSON; plain words are what people type, so take them too
        try:
            items = shlex.split(text)
        except ValueError as exc:
            problems.append(f"BASE_ARGS: neither a JSON array nor shell words: {exc}")
            return
    if not isinstance(items, list) or not all(isinstance(i, str | int | float) for i in items):
        problems.append("BASE_ARGS: not a JSON array of strings")
        return
    kept: list[str] = []
    for segment in flag_segments([Word(str(i), str(i)) for i in items]):
        tokens = [w.value for w in segment]
        errors = parse(tokens, Layer.BASE).errors
        if errors:
            draft.warn("BASE_ARGS", f"{' '.join(tokens)}: not imported: {errors[0]}")
        else:
            kept += tokens
    draft.set_server("base_args", kept, note)
    spelled = {t for t in kept if t in ("--no-mmap", "--mmap", "--mlock", "-fa")}
    if spelled:
        draft.note(
            f"{', '.join(sorted(spelled))}: older spellings; llamasup passes the current "
            "flags (--load-mode, --flash-attn on) to this llama-server build",
            section="server",
            name="base_args",
        )


def _agent_flags(draft: Draft) -> None:
    allowed = [n for n in HEADER_LOAD_FLAGS if (d := lookup(n)) is not None and d.kind is Kind.LOAD]
    draft.set_server(
        "agent_flags",
        {"enabled": True, "allow_load_flags": allowed},
        "X-Agent-Flags keeps working: request-time flags always, load-time ones only if listed",
    )
    draft.warn(
        "X-Agent-Flags",
        "llama-sidecar accepted any valid flag in the header; llamasup accepts sampling flags "
        f"and only the load-time flags in server.agent_flags.allow_load_flags "
        f"({' '.join(allowed)}); add what your agents send, or define them as agents",
    )


def _models(draft: Draft, map_file: Path, read_bytes: ReadBytes, problems: list[str]) -> None:
    where = f"MODEL_DIR_MAP_FILE ({map_file})"
    try:
        text = read_bytes(map_file).decode("utf-8-sig")  # the daemon met BOMs from Windows editors
        mapping: Any = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problems.append(f"{where}: cannot read a JSON map of model id → GGUF path: {exc}")
        return
    if not isinstance(mapping, dict) or not mapping:
        problems.append(f"{where}: expected a non-empty JSON object of model id → GGUF path")
        return
    taken = {key for key in mapping if valid_id(key)}
    for orig, path in mapping.items():
        if not isinstance(path, str) or not path:
            draft.warn(f"{where}: {orig}", f"{path!r} is not a path; not imported")
            continue
        new_id = orig
        entry = Entry({"path": path})
        if not valid_id(orig):
            new_id = sanitize_id(orig, taken)
            taken.add(new_id)
            kept = valid_alias(orig)
            if kept:
                entry.fields["aliases"] = [orig]
            draft.models[new_id] = entry
            draft.warn(
                f"{where}: {orig}",
                f"not a valid llamasup model id; imported as {new_id!r}"
                + (" with the original kept as an alias" if kept else "; clients must use it"),
                section="models",
                name=new_id,
            )
        draft.models[new_id] = entry
        if not (path.startswith(("/", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", path)):
            draft.warn(
                f"{where}: {orig}",
                f"{path} was relative to llama-sidecar's working directory; in a profile it is "
                "relative to the profile file",
                section="models",
                name=new_id,
            )
