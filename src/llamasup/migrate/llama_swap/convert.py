"""``llamasup import llama-swap``: a llama-swap ``config.yaml`` → an equivalent profile set.

The import is a pure function of the config text and the environment: ``import_swap`` returns
a ``Draft`` (entries, comments, warnings), or raises ``InputError`` listing what llama-swap
itself would refuse (bad YAML, wrong types, unknown macros, unset ``${env.*}``, the checks of
its loader in ``rules``). Macros are applied first, to the whole config (``expand``);
per-model work is in ``model``, filters in ``filters``, groups and preloading in ``groups``.
"""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from llamasup.core import defaults
from llamasup.core.yamlsrc import YamlSyntaxError, load_yaml
from llamasup.errors import ProfileError
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
from llamasup.migrate.emit import model_argvs, render_single, validate
from llamasup.migrate.llama_swap.cmd import ENV_REF
from llamasup.migrate.llama_swap.expand import expand
from llamasup.migrate.llama_swap.filters import apply_filters, set_or_drop
from llamasup.migrate.llama_swap.groups import apply_groups, apply_preload
from llamasup.migrate.llama_swap.model import Context, ModelImport, import_model, put
from llamasup.migrate.llama_swap.paths import WorkDir
from llamasup.migrate.llama_swap.rules import fifo_priorities, refusals, routing
from llamasup.migrate.llama_swap.shape import shape_problems

TOP_KEYS = frozenset(
    {
        "healthCheckTimeout", "logRequests", "logLevel", "logTimeFormat", "logToStdout",
        "metricsMaxInMemory", "captureBuffer", "globalTTL", "models", "profiles", "groups",
        "matrix", "macros", "startPort", "hooks", "sendLoadingState", "includeAliasesInList",
        "apiKeys", "peers", "routing", "unloadTimeout", "performance", "selectors", "store",
        "ui", "upstream",
    }
)  # fmt: skip
_TOP_NO_EQUIVALENT = {
    "logRequests": "no equivalent; llamasup logs each request at info level",
    "logTimeFormat": "no equivalent; llamasup's log format is fixed",
    "logToStdout": "no equivalent; sidecar output goes to per-sidecar logs (llamasup logs)",
    "metricsMaxInMemory": "no equivalent; llamasup exports Prometheus metrics instead",
    "captureBuffer": "no equivalent; llamasup does not capture request bodies",
    "sendLoadingState": "no equivalent; llamasup does not stream loading progress",
    "includeAliasesInList": "no equivalent; /v1/models lists model ids",
    "profiles": "no equivalent; use groups with max_running, or agents, instead",
    "peers": "no equivalent; llamasup serves only local sidecars",
    "unloadTimeout": "no equivalent; llamasup waits server.stop_grace for a stopping sidecar",
    "performance": "no equivalent; llamasup does not sample system performance",
    "selectors": "no equivalent; clients name a model or an agent",
    "store": "no equivalent; llamasup keeps no request history",
    "ui": "no equivalent; llamasup has no web UI",
    "upstream": "no equivalent; /upstream passes through to a model by name",
}
PORT_SPAN = 100


def import_swap(
    text: str,
    *,
    source: str,
    environ: Mapping[str, str],
    anchor: Path,
    workdir: Path | None = None,
    listen: str | None = None,
) -> Draft:
    """Convert a llama-swap config; ``anchor`` is where relative paths will resolve and
    ``workdir`` where llama-swap ran (its relative paths resolved there; default: the
    current directory)."""
    data = _document(text)
    draft = Draft(source)
    expanded = expand(data, environ)
    if expanded.problems:
        raise InputError(expanded.problems)
    missing: set[str] = set()
    problems = routing(data) or shape_problems(data, environ, missing)
    problems = problems or refusals(data)
    if problems:
        raise InputError(problems)
    where = WorkDir((workdir or Path.cwd()).resolve())
    ctx = Context(draft, environ, problems, missing, _checker(anchor, environ), where)
    imports = _models(ctx, data.get("models") or {})
    problems += [
        f"environment variable {name} is not set (llama-swap refuses such a config too)"
        for name in sorted(ctx.missing_env)
    ]
    if problems:
        raise InputError(problems)
    if not imports:
        draft.warn("models", "none: the imported profile set serves no model")
    _aliases(draft, imports)
    for imp in imports:
        apply_filters(draft, imp, data["models"][imp.orig].get("filters") or {})
    _ttls(draft, imports, data)
    _priorities(draft, imports, data)
    try:
        apply_groups(draft, imports, data)
    except ValueError as exc:
        raise InputError([str(exc)]) from exc
    apply_preload(draft, imports, data)
    _server(draft, data, listen, len(imports))
    _binaries(draft, imports)
    _base_args(draft, imports, anchor, environ)
    _server_order(draft)
    for key, value in data.items():
        if key in _TOP_NO_EQUIVALENT:
            # values of lists and mappings are not echoed: peers may hold API keys
            shown = "" if isinstance(value, dict | list) else f"{json.dumps(value)}: "
            draft.warn(key, shown + _TOP_NO_EQUIVALENT[key])
        elif key == "routing":
            _routing_rest(draft, value)
        elif key not in TOP_KEYS:
            draft.warn(key, "unknown llama-swap setting; not imported")
    return draft


def _priorities(draft: Draft, imports: list[ModelImport], data: Mapping[str, Any]) -> None:
    """routing.scheduler.settings.fifo.priority: higher first in both."""
    by_name = {name: imp for imp in imports for name, _ in [(imp.orig, ""), *imp.aliases]}
    for name, value in fifo_priorities(data).items():
        imp = by_name.get(name)
        if imp is None or not isinstance(value, int) or isinstance(value, bool):
            continue
        clamped = max(-1000, min(1000, value))
        if clamped != value:
            draft.warn(
                f"routing.scheduler.settings.fifo.priority.{name}",
                f"{value} became {clamped}: llamasup priorities go from -1000 to 1000",
            )
        if clamped:
            put(imp.entry, "priority", clamped)


def _routing_rest(draft: Draft, routing_block: Any) -> None:
    router = routing_block.get("router") if isinstance(routing_block, dict) else None
    for key in routing_block if isinstance(routing_block, dict) else ():
        if key not in ("router", "scheduler"):
            draft.warn(f"routing.{key}", "unknown llama-swap routing setting; not imported")
    for key in router if isinstance(router, dict) else ():
        if key not in ("use", "settings"):
            draft.warn(f"routing.router.{key}", "unknown llama-swap router setting; not imported")


def _document(text: str) -> dict[str, Any]:
    try:
        doc = load_yaml(text)
    except YamlSyntaxError as exc:
        raise InputError([f"line {exc.line}: {exc}"]) from exc
    if doc.duplicates:
        raise InputError([f"{'.'.join(map(str, p))}: duplicate key" for p, _, _ in doc.duplicates])
    data = doc.data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(["the config is not a mapping of settings"])
    if data.get("models") is not None and not isinstance(data["models"], dict):
        raise InputError(["models: a mapping of model id → settings"])
    return data


def _checker(anchor: Path, environ: Mapping[str, str]) -> Callable[[str, Entry], list[str]]:
    def check(model_id: str, entry: Entry) -> list[str]:
        trial = Draft("check", models={model_id: Entry(dict(entry.fields))})
        try:
            validate(render_single(trial), anchor, environ)
        except ProfileError as exc:
            return [f"{issue.path}: {issue.message}" for issue in exc.issues]
        return []

    return check


def _models(ctx: Context, models: Mapping[str, Any]) -> list[ModelImport]:
    taken: set[str] = {str(orig) for orig in models if valid_id(str(orig))}
    imports = []
    for orig_key in models:
        orig = str(orig_key)
        new_id = orig
        if not valid_id(orig):
            new_id = sanitize_id(orig, taken)
            taken.add(new_id)
            ctx.draft.warn(
                f"models.{orig}",
                f"not a valid llamasup model id; imported as {new_id!r} with the original "
                "name kept as an alias where aliases allow it",
                section="models",
                name=new_id,
            )
        imp = import_model(ctx, orig, new_id, models[orig_key])
        if imp is not None:
            imports.append(imp)
    return imports


def _aliases(draft: Draft, imports: list[ModelImport]) -> None:
    ids = {imp.id for imp in imports}
    owner: dict[str, str] = {}
    for imp in imports:
        wanted = list(imp.aliases)
        if imp.orig != imp.id:
            wanted.insert(0, (imp.orig, f"models.{imp.orig}"))
        kept: list[str] = []
        for alias, path in wanted:
            problem = ""
            if alias == imp.id or alias in kept:
                continue
            if not valid_alias(alias):
                problem = f"clients must use {imp.id!r}: {alias!r} is not a valid alias"
            elif alias in ids:
                problem = f"{alias!r} is the id of another model"
            elif alias in owner:
                problem = f"{alias!r} is already an alias of {owner[alias]!r}"
            if problem:
                draft.warn(path, f"alias not imported: {problem}", section="models", name=imp.id)
                continue
            kept.append(alias)
            owner[alias] = imp.id
        if kept:
            put(imp.entry, "aliases", kept)


def _ttls(draft: Draft, imports: list[ModelImport], data: Mapping[str, Any]) -> None:
    global_ttl = data.get("globalTTL", 0)
    if not isinstance(global_ttl, int) or global_ttl < 0:
        raise InputError(["globalTTL: seconds >= 0"])
    if global_ttl:
        draft.set_server("idle_ttl", duration(global_ttl), "from globalTTL (seconds)")
    for imp in imports:
        effective = global_ttl if imp.ttl == -1 else imp.ttl
        imp.ttl = effective
        if effective != global_ttl:
            put(imp.entry, "ttl", duration(effective))


def _server(draft: Draft, data: Mapping[str, Any], listen: str | None, n_models: int) -> None:
    keys = _api_keys(draft, data.get("apiKeys") or [])
    listen_port = defaults.LISTEN_PORT
    if listen:
        draft.set_server("listen", listen, "from --listen (llama-swap's own -listen flag)")
        host, _, port = listen.rpartition(":")
        listen_port = int(port) if port.isdigit() else listen_port
        if not keys and not _loopback(host):
            draft.set_server("allow_public_listen", True)
            draft.warn("apiKeys", f"none: {listen} serves anyone who can reach it, as before")
    if "healthCheckTimeout" in data:
        seconds = max(15, _int(data, "healthCheckTimeout"))
        note = (
            f"healthCheckTimeout {seconds}s: the time a request waits for its model, and here "
            "also the time a loading model may stay silent before llamasup gives up on it"
        )
        draft.set_server("health_timeout", duration(seconds), note)
        draft.set_server("start_timeout", duration(seconds))
    if "logLevel" in data:
        level = log_level(str(data["logLevel"]))
        if level is None:
            draft.warn("logLevel", f"{data['logLevel']!r} is not debug/info/warn/error")
        else:
            draft.set_server("log_level", level)
    if "startPort" in data:
        draft.set_server("ports", _ports(draft, _int(data, "startPort"), n_models, listen_port))
    if keys:
        draft.set_server("api_keys", keys)


_SERVER_ORDER = (
    "listen", "allow_public_listen", "binary", "ports", "max_sidecars", "base_args",
    "health_timeout", "start_timeout", "idle_ttl", "log_level", "api_keys",
)  # fmt: skip


def _server_order(draft: Draft) -> None:
    rank = {key: i for i, key in enumerate(_SERVER_ORDER)}
    draft.server = dict(sorted(draft.server.items(), key=lambda kv: rank.get(kv[0], 99)))


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError([f"{key}: a whole number of at least 1, got {value!r}"])
    return value


def _ports(draft: Draft, start: int, n_models: int, listen_port: int) -> str:
    end = min(65535, start + max(PORT_SPAN, n_models) - 1)
    if start <= listen_port <= end:
        below, above = listen_port - start, min(65535, listen_port + PORT_SPAN) - listen_port
        if below >= max(n_models, above):
            end = listen_port - 1
        else:
            start, end = listen_port + 1, listen_port + above
        draft.warn("startPort", f"moved the sidecar range to {start}-{end} around the listen port")
    draft.note(
        f"ports: from startPort; llama-swap numbered one port per model, llamasup hands out "
        f"ports from this range to running sidecars ({end - start + 1} here)",
        section="server",
        name="ports",
    )
    return f"{start}-{end}"


def _api_keys(draft: Draft, keys: Any) -> list[dict[str, str]]:
    result = []
    for i, key in enumerate(keys if isinstance(keys, list) else []):
        whole = ENV_REF.fullmatch(str(key))
        if whole:
            env = whole.group(1)
        else:
            env = f"LLAMASUP_API_KEY_{i + 1}"
            draft.secrets[env] = f"the key written in apiKeys[{i}]"
            draft.warn(
                f"apiKeys[{i}]",
                f"key not copied into the profile: set {env} to it in llamasup's environment",
            )
        result.append({"name": f"llama-swap-{i + 1}", "env": env, "scope": "inference"})
    if result:
        draft.note(
            "api_keys: llama-swap's apiKeys guard inference; the control API (apply, status, "
            "logs) needs an admin-scope key, add one if it is used remotely",
            section="server",
            name="api_keys",
        )
    return result


def _binaries(draft: Draft, imports: list[ModelImport]) -> None:
    binaries = Counter(imp.binary for imp in imports if imp.is_server)
    if not binaries:
        return
    common = binaries.most_common(1)[0][0]
    draft.set_server("binary", common)
    for imp in imports:
        if imp.is_server and imp.binary == common:
            imp.entry.fields.pop("binary", None)


def _base_args(
    draft: Draft, imports: list[ModelImport], anchor: Path, environ: Mapping[str, str]
) -> None:
    """Move flags every llama-server model shares to server.base_args, if argv stay identical."""
    servers = [imp for imp in imports if imp.is_server and imp.server is not None]
    if len(servers) < 2:
        return
    common = [s.raw for s in servers[0].server.kept]  # type: ignore[union-attr]
    for imp in servers[1:]:
        present = [s.raw for s in imp.server.kept]  # type: ignore[union-attr]
        common = [raw for raw in common if raw in present]
    if not common:
        return
    before = model_argvs(validate(render_single(draft), anchor, environ))
    saved = {imp.id: dict(imp.entry.fields) for imp in servers}
    for imp in servers:
        rest = [t for s in imp.server.kept if s.raw not in common for t in s.raw]  # type: ignore[union-attr]
        set_or_drop(imp.entry, "args", rest)
    draft.server["base_args"] = [token for raw in common for token in raw]
    if model_argvs(validate(render_single(draft), anchor, environ)) != before:
        for imp in servers:
            imp.entry.fields = saved[imp.id]
        del draft.server["base_args"]
        return
    draft.note(
        "base_args: the flags every llama-server model had; each model's argv is unchanged",
        section="server",
        name="base_args",
    )


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
