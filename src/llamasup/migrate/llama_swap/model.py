"""One llama-swap model → one profile model (llama-server or ``command:``), with its notes."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from llamasup.flags.flagset import env_owned_by_llamasup
from llamasup.migrate.draft import Draft, Entry
from llamasup.migrate.llama_swap.cmd import (
    PORT,
    Command,
    ServerArgs,
    clean_command,
    server_args,
    split_command,
    split_words,
)
from llamasup.migrate.llama_swap.paths import WorkDir

MODEL_KEYS = frozenset(
    {
        "cmd", "cmdStop", "proxy", "aliases", "env", "checkEndpoint", "ttl", "unlisted",
        "useModelName", "name", "description", "concurrencyLimit", "filters", "macros",
        "metadata", "sendLoadingState", "timeouts", "unloadTimeout", "capabilities", "compat",
    }
)  # fmt: skip
_DEFAULT_PROXY = re.compile(r"^https?://(localhost|127\.0\.0\.1|\[::1\]):\$\{PORT\}/?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FIELD_ORDER = (
    "description", "path", "command", "health", "binary", "args", "aliases", "env", "group",
    "pinned", "preload", "ttl", "concurrency", "queue", "unlisted", "upstream_model", "priority",
    "request",
)  # fmt: skip


def put(entry: Entry, key: str, value: Any) -> None:
    """Set a model field, keeping the field order of the written profile."""
    fields = {**entry.fields, key: value}
    entry.fields = {k: fields[k] for k in FIELD_ORDER if k in fields}


@dataclass
class ModelImport:
    """What the importer knows about one model beyond its profile entry."""

    orig: str
    id: str
    entry: Entry
    server: ServerArgs | None = None  # set for llama-server models
    binary: str = ""
    ttl: int = -1  # seconds; -1: the global default
    aliases: list[tuple[str, str]] = field(default_factory=list)  # (alias, input key path)

    @property
    def is_server(self) -> bool:
        return self.server is not None and not self.entry.disabled


@dataclass
class Context:
    draft: Draft
    environ: Mapping[str, str]
    problems: list[str]  # input errors: the import stops
    missing_env: set[str]
    #: checks one model entry the way the profile loader would: a list of problems
    check: Callable[[str, Entry], list[str]]
    #: llama-swap's working directory, against which its relative paths resolved
    workdir: WorkDir


def import_model(ctx: Context, orig: str, new_id: str, raw: Any) -> ModelImport | None:
    """``raw`` has its macros expanded already (see ``expand``); ${PORT} is a placeholder."""
    where = f"models.{orig}"
    if not isinstance(raw, dict):
        ctx.problems.append(f"{where}: a model is a mapping with at least cmd")
        return None
    result = ModelImport(orig, new_id, Entry())
    ctx.draft.models[new_id] = result.entry

    def warn(key: str, message: str) -> None:
        ctx.draft.warn(f"{where}.{key}" if key else where, message, section="models", name=new_id)

    cmd = raw.get("cmd")
    if not isinstance(cmd, str) or not cmd.strip():
        ctx.problems.append(f"{where}.cmd: required, the command that starts the server")
        return None
    words, baked = split_words(clean_command(cmd), ctx.environ, ctx.missing_env)
    if baked:
        warn("cmd", "an ${env.*} value splits into several arguments, so its value is written")
    command = split_command(words)
    if command is None:
        ctx.problems.append(f"{where}.cmd: empty command")
        return None
    fields = result.entry.fields
    env, port_env = _env(raw.get("env"), command, warn, ctx.problems, where)
    proxy = str(raw.get("proxy") or "http://localhost:${PORT}")
    health = health_path(str(raw.get("checkEndpoint") or "/health"), proxy)
    comment = next((w.value for w in command.args if w.value.startswith("#")), None)
    if comment is not None:
        warn(
            "cmd",
            f"{comment!r} and what follows are arguments: a folded (>) block joins comment "
            "lines into the command, and llama-swap passes them to the program as they are; "
            "kept as a command model running that exact argv (write cmd as a | block to "
            "drop the comments)",
        )
    elif command.is_llama_server and not port_env:
        _server_model(ctx, result, command, health, warn)
    if not result.is_server:
        _command_model(
            ctx, result, command, port_env=port_env, proxy=proxy, health=health, warn=warn
        )
    elif not _DEFAULT_PROXY.match(proxy):
        warn("proxy", f"{proxy}: ignored; llamasup forwards to the llama-server it started")
    if env:
        fields["env"] = env
    _lifecycle(result, raw, warn, ctx.problems, where)
    fields.update(_identity(raw, warn))
    if not result.entry.disabled:
        problems = ctx.check(new_id, result.entry)
        if problems:
            result.entry.disabled = True
            warn("", "not imported (written commented out): " + "; ".join(problems[:3]))
    result.entry.fields = {k: fields[k] for k in FIELD_ORDER if k in fields}
    _other_keys(raw, warn)
    return result


def health_path(check: str, proxy: str) -> str:
    """The path llama-swap probes: checkEndpoint goes through the reverse proxy, so a full
    URL keeps only its path and query, and the proxy's own path comes first."""
    check = check.strip()
    if check == "none":
        return check
    url = urlsplit(check)
    path = url.path if url.path.startswith("/") else f"/{url.path}"
    prefix = urlsplit(proxy).path.rstrip("/")
    return prefix + path + (f"?{url.query}" if url.query else "")


def _server_model(
    ctx: Context,
    result: ModelImport,
    command: Command,
    health: str,
    warn: Callable[[str, str], None],
) -> None:
    args = server_args(command.args)
    trial = Entry(_server_fields(ctx.workdir, command, args, warn))
    failures = args.failures or ctx.check(result.id, trial)
    if failures:
        warn(
            "cmd",
            "kept as a command model running the exact argv, because llamasup's flag model "
            f"cannot take it: {'; '.join(failures)}",
        )
        return
    result.server, result.binary = args, trial.fields["binary"]
    result.entry.fields.update(trial.fields)
    for _flag, message in args.dropped:
        warn("cmd", message)
    if health not in ("/health", "none"):
        warn("checkEndpoint", f"{health}: llamasup probes /health of llama-server sidecars")
    result.aliases += [(a, f"models.{result.orig}.cmd --alias") for a in args.aliases]


def _server_fields(
    workdir: WorkDir, command: Command, args: ServerArgs, warn: Callable[[str, str], None]
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if args.path is not None:
        fields["path"] = workdir.resolve(args.path.raw, "model path", warn)
    fields["binary"] = workdir.resolve(command.program.raw, "program", warn)
    tokens = [token for segment in args.kept for token in segment.raw]
    if tokens:
        fields["args"] = tokens
    return fields


def _command_model(
    ctx: Context,
    result: ModelImport,
    command: Command,
    *,
    port_env: list[str],
    proxy: str,
    health: str,
    warn: Callable[[str, str], None],
) -> None:
    fields = result.entry.fields
    program = ctx.workdir.resolve(command.program.raw, "program", warn)
    argv = [*(["env", *port_env] if port_env else []), program, *(w.raw for w in command.args)]
    url = urlsplit(proxy)
    if not any(PORT in w for w in argv):
        port = url.port
        argv = _port_placeholder(argv, port)
        if any(PORT in w for w in argv):
            warn("proxy", f"{proxy}: its fixed port in cmd became ${{PORT}} (llamasup assigns it)")
        elif (known := _default_port_server(command, port)) is not None:
            argv = ["env", known, *argv]
            warn("cmd", f"{proxy} is the server's default port; now told its port by {known}")
        else:
            warn(
                "cmd",
                f"not imported: it listens on port {port or '?'} (from proxy), which is "
                "neither ${PORT} nor written in cmd, and llamasup must give each command its "
                "port; add the program's port option with ${PORT} to command",
            )
            result.entry.disabled = True
    if url.hostname not in (None, "localhost", "127.0.0.1", "::1"):
        warn("proxy", f"{proxy}: llamasup reaches command upstreams on 127.0.0.1:${{PORT}}")
    elif url.path.strip("/"):
        warn("proxy", f"{proxy}: its path is not kept; llamasup forwards request paths as sent")
    fields["command"] = argv
    if health == "none":
        fields["health"] = "/"
        warn(
            "checkEndpoint",
            "none: llamasup always waits for an HTTP 200; it now probes / (set health to a "
            "path this server answers with 200)",
        )
    elif health != "/health":
        fields["health"] = health
    if command.is_docker_llama_cpp:
        result.entry.notes.append(
            "runs llama.cpp's server image: llamasup supervises it as an opaque command (no flag "
            "checks, memory estimate or load-time agents); a native path: model gets all three"
        )


#: servers that listen on a default port unless told otherwise: (program, port) → how to tell
_DEFAULT_PORT_ENV = {("ollama", 11434): "OLLAMA_HOST=127.0.0.1:${PORT}"}


def _default_port_server(command: Command, port: int | None) -> str | None:
    name = re.split(r"[/\\]", command.program.value)[-1]
    return _DEFAULT_PORT_ENV.get((name, port or 0))


def _port_placeholder(argv: list[str], port: int | None) -> list[str]:
    if port is None:
        return argv
    fixed = re.compile(rf"(^|[:=]){port}($|:)")
    return [fixed.sub(lambda m: f"{m.group(1)}{PORT}{m.group(2)}", w) for w in argv]


def _env(
    raw: Any, command: Command, warn: Callable[[str, str], None], problems: list[str], where: str
) -> tuple[dict[str, str], list[str]]:
    """The model's environment, and the ``NAME=...${PORT}...`` assignments, which only a
    command can carry (llamasup substitutes ${PORT} in a command's argv, not in env)."""
    pairs: list[tuple[str, str, str]] = [(k, w.raw, "cmd") for k, w in command.env]
    if raw is not None and not isinstance(raw, list):
        problems.append(f"{where}.env: a list of NAME=value strings")
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        name, sep, value = str(item).partition("=")
        if not sep:
            warn(f"env[{i}]", f"{item!r} is not NAME=value; not imported")
            continue
        pairs.append((name, value, f"env[{i}]"))
    env: dict[str, str] = {}
    port_env: list[str] = []
    for name, value, key in pairs:
        owned = env_owned_by_llamasup(name)
        if not _ENV_NAME.match(name):
            warn(key, f"{name} is not a valid environment variable name; not imported")
        elif owned is not None:
            warn(key, f"{name} would set {owned.name}, which llamasup owns; not imported")
        elif PORT in value:
            port_env.append(f"{name}={value}")
        else:
            env[name] = value
    return env, port_env


def _lifecycle(
    result: ModelImport,
    raw: Mapping[str, Any],
    warn: Callable[[str, str], None],
    problems: list[str],
    where: str,
) -> None:
    fields = result.entry.fields
    ttl = raw.get("ttl", -1)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < -1:
        problems.append(f"{where}.ttl: seconds >= 0, or -1 for globalTTL")
    else:
        result.ttl = ttl
    limit = raw.get("concurrencyLimit", 0)
    if isinstance(limit, int) and limit > 0:
        fields["concurrency"], fields["queue"] = limit, 0
        result.entry.notes.append(
            f"concurrencyLimit {limit}: llama-swap answered 429 at once beyond it, hence "
            "queue: 0; raise queue to let requests wait instead"
        )
    if raw.get("unlisted"):
        fields["unlisted"] = True
    if raw.get("useModelName"):
        fields["upstream_model"] = str(raw["useModelName"])
    for i, item in enumerate(raw.get("aliases") or []):
        alias = item
        if isinstance(item, dict):
            if item.get("name") or item.get("unlisted"):
                warn(f"aliases[{i}]", "name/unlisted of an alias have no equivalent")
            alias = item.get("id", "")
        result.aliases.append((str(alias), f"{where}.aliases[{i}]"))


def _identity(raw: Mapping[str, Any], warn: Callable[[str, str], None]) -> dict[str, Any]:
    name = str(raw.get("name") or "")
    description = str(raw.get("description") or "")
    if name:
        warn("name", "no display-name field in a profile; it leads the description instead")
    text = f"{name}: {description}" if name and description else name or description
    return {"description": text} if text else {}


_NO_EQUIVALENT = {
    "cmdStop": "no equivalent: llamasup stops a sidecar with SIGTERM to its process group, then "
    "SIGKILL after server.stop_grace (docker run forwards SIGTERM to its container)",
    "metadata": "no equivalent: /v1/models shows no custom metadata",
    "sendLoadingState": "no equivalent: llamasup does not stream loading progress",
    "timeouts": "no equivalent: llamasup's upstream timeouts are not configurable per model",
    "unloadTimeout": "no equivalent: llamasup waits server.stop_grace for a stopping sidecar",
    "capabilities": "no equivalent: /v1/models shows no capabilities",
    "compat": "no equivalent: llamasup proxies HTTP requests, not websockets",
}


def _other_keys(raw: Mapping[str, Any], warn: Callable[[str, str], None]) -> None:
    for key in raw:
        if key in _NO_EQUIVALENT:
            warn(key, _NO_EQUIVALENT[key])
        elif key not in MODEL_KEYS:
            warn(key, "unknown llama-swap model setting; not imported")
