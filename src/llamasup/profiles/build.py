"""From parsed profile files to ``Profiles``: typed values, flags, and cross-file checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llamasup.core.units import parse_duration, parse_size
from llamasup.errors import FlagError
from llamasup.flags.dialect import BinaryFlags, for_binary
from llamasup.flags.flagset import FlagSet, env_owned_by_llamasup, lookup, merge, parse, tokenize
from llamasup.flags.vocabulary import Kind, Layer
from llamasup.profiles.binaries import BinaryCatalog
from llamasup.profiles.budget import declared_memory, memory_budget
from llamasup.profiles.checks import (
    check_agent_names,
    check_aliases,
    check_listen,
    check_pinned,
    check_spawn_placeholders,
)
from llamasup.profiles.parsed import At, IssueLog, ParsedFile, where
from llamasup.profiles.request_rules import request_rules
from llamasup.profiles.types import (
    AgentConfig,
    ApiKeyConfig,
    GroupConfig,
    ModelConfig,
    Profiles,
    RequestRules,
    ServerConfig,
    Source,
)
from llamasup.profiles.values import (
    binary_value,
    client_timeouts,
    parse_listen,
    parse_port_range,
    resolve_path,
    restart_config,
    scheduling_config,
    ttl_value,
)
from llamasup.runtime.locate import LLAMA_CPP_BUILD

_LOCATED_MODEL_KEYS = ("path", "binary", "command")

_SOURCE_FLAGS = frozenset(
    {
        "--hf-repo",
        "--model-url",
        "--docker-repo",
        "--embd-gemma-default",
        "--fim-qwen-1.5b-default",
        "--fim-qwen-3b-default",
        "--fim-qwen-7b-default",
        "--fim-qwen-7b-spec",
        "--fim-qwen-14b-spec",
        "--fim-qwen-30b-default",
        "--gpt-oss-20b-default",
        "--gpt-oss-120b-default",
        "--vision-gemma-4b-default",
        "--vision-gemma-12b-default",
    }
)


class _Builder:
    def __init__(self, log: IssueLog, environ: Mapping[str, str]) -> None:
        self.log = log
        self.environ = environ
        self.server: dict[str, tuple[At, Any]] = {}
        self.sections: dict[str, dict[str, tuple[At, Any]]] = {
            "models": {},
            "agents": {},
            "groups": {},
        }
        self._binaries = BinaryCatalog(environ)

    def error(self, at: At, message: str, *suffix: str | int) -> None:
        self.log.error(at.file, (*at.path, *suffix), message)

    # -- collecting ------------------------------------------------------------------------

    def add_file(self, parsed: ParsedFile) -> None:
        data: dict[str, Any] = parsed.data
        for key, value in dict(data.get("server") or {}).items():
            at = At(parsed, ("server", key))
            if key in self.server:
                first = self.server[key][0]
                self.error(at, f"server.{key} is also set in {where(first)}; set it once")
            else:
                self.server[key] = (at, value)
        for section, table in self.sections.items():
            for name, value in dict(data.get(section) or {}).items():
                at = At(parsed, (section, name))
                if name in table:
                    first = table[name][0]
                    kind = section[:-1]
                    self.error(at, f"{kind} {name!r} is also defined in {where(first)}")
                else:
                    table[name] = (at, value)

    # -- building --------------------------------------------------------------------------

    def finish(self, source: str, revision: str, files: Sequence[str]) -> Profiles | None:
        server = self._server()
        models = {
            name: model
            for name, (at, raw) in sorted(self.sections["models"].items())
            if (model := self._model(name, at, raw, server)) is not None
        }
        agents = {
            name: agent
            for name, (at, raw) in sorted(self.sections["agents"].items())
            if (agent := self._agent(name, at, raw, models)) is not None
        }
        groups = {
            name: GroupConfig(
                name=name,
                max_running=int(raw.get("max_running", 1)),
                description=str(raw.get("description", "")),
                source=_source(at),
                exclusive=bool(raw.get("exclusive", False)),
                persistent=bool(raw.get("persistent", False)),
            )
            for name, (at, raw) in sorted(self.sections["groups"].items())
        }
        check_aliases(models, self.sections["models"], self.log)
        check_agent_names(models, agents, self.sections["agents"], self.log)
        check_pinned(models, server, self.sections["models"], self.log)
        check_listen(server, self.server, self.log)
        if self.log.errors:
            return None
        return Profiles(
            server=server,
            models=models,
            agents=agents,
            groups=groups,
            source=source,
            files=tuple(files),
            revision=revision,
            warnings=tuple(self.log.warnings),
            sources=self._key_sources(),
        )

    def _key_sources(self) -> dict[tuple[str, ...], Source]:
        sources: dict[tuple[str, ...], Source] = {
            ("server", key): _source(at) for key, (at, _) in self.server.items()
        }
        for name, (at, raw) in self.sections["models"].items():
            for key in _LOCATED_MODEL_KEYS:
                if isinstance(raw, Mapping) and key in raw:
                    sources[("models", name, key)] = _source(At(at.file, (*at.path, key)))
        return sources

    def _server(self) -> ServerConfig:
        values: dict[str, Any] = {}
        for key, (at, raw) in self.server.items():
            try:
                values.update(self._server_value(key, raw, at))
            except ValueError as exc:
                self.error(at, str(exc))
        return ServerConfig(**values)

    def _server_value(self, key: str, raw: Any, at: At) -> dict[str, Any]:
        directory = at.file.directory
        if key == "listen":
            host, port = parse_listen(str(raw))
            return {"listen_host": host, "listen_port": port}
        if key == "ports":
            return {"ports": parse_port_range(str(raw))}
        if key in ("health_timeout", "health_interval", "stop_grace", "start_timeout"):
            return {key: parse_duration(raw)}
        if key == "idle_ttl":
            return {"idle_ttl": ttl_value(raw)}
        if key == "memory_budget":
            return memory_budget(raw)
        if key == "max_request_body":
            return {key: None if raw is None else parse_size(raw)}
        if key == "base_args":
            binary = self._binary_flags(self._configured_binary(None))
            return {"base_args": self._flags(raw, at, Layer.BASE, binary)}
        if key == "env":
            return {"env": self._env(raw, at)}
        if key == "binary":
            return {"binary": binary_value(str(raw), directory)}
        if key == "state_dir":
            return {"state_dir": resolve_path(str(raw), directory)}
        if key == "api_keys":
            return {"api_keys": tuple(self._api_key(item, at, i) for i, item in enumerate(raw))}
        if key == "agent_flags":
            allowed = self._allow_load(raw.get("allow_load_flags", []), at)
            return {
                "agent_flags_enabled": bool(raw.get("enabled", False)),
                "agent_flags_allow_load": allowed,
            }
        if key == "restart":
            return {"restart": restart_config(raw)}
        if key == "request_log":
            # YAML reads a bare off/on as a boolean: take it as meant
            return {key: {False: "off", True: "text"}.get(raw, raw)}
        if key == "scheduling":
            return {"scheduling": scheduling_config(raw)}
        if key == "client_timeouts":
            return {"client_timeouts": client_timeouts(raw)}
        if key in ("cors_origins", "allowed_hosts"):
            return {key: tuple(str(item).lower().rstrip(".") for item in raw)}
        return {key: raw}

    def _api_key(self, raw: Mapping[str, Any], at: At, index: int) -> ApiKeyConfig:
        file = raw.get("file")
        return ApiKeyConfig(
            name=str(raw["name"]),
            scope=raw["scope"],
            env=raw.get("env"),
            file=None if file is None else resolve_path(str(file), at.file.directory),
            source=_source(At(at.file, (*at.path, index))),
        )

    def _allow_load(self, names: Sequence[str], at: At) -> frozenset[str]:
        allowed: set[str] = set()
        for i, name in enumerate(names):
            definition = lookup(name)
            if definition is None:
                self.error(at, f"unknown llama-server flag {name!r}", "allow_load_flags", i)
            elif definition.kind is not Kind.LOAD:
                self.error(
                    at,
                    f"{name} is a {definition.kind.value} flag; only load-time flags can be "
                    "allowed here (request-time flags are always allowed)",
                    "allow_load_flags",
                    i,
                )
            else:
                allowed.add(definition.name)
        return frozenset(allowed)

    def _flags(self, raw: Any, at: At, layer: Layer, binary: BinaryFlags | None = None) -> FlagSet:
        try:
            tokens = tokenize(raw)
        except FlagError as exc:
            self.error(at, str(exc))
            return FlagSet()
        result = parse(tokens, layer, extra=None if binary is None else binary.unknown_flag)
        for problem in result.errors:
            index = _token_index(raw, problem.flag)
            self.error(at, str(problem), *(() if index is None else (index,)))
        for setting in result.flags.settings:
            if binary is not None and lookup(setting.name) is None:
                self.log.warn(
                    at.file,
                    at.path,
                    f"{setting.spelled} is not in llamasup's flag table (llama.cpp "
                    f"b{LLAMA_CPP_BUILD}); accepted as a load-time flag because "
                    f"{binary.describe()} lists it",
                )
        return result.flags

    def _configured_binary(
        self, model_raw: Mapping[str, Any] | None, at: At | None = None
    ) -> str | None:
        """The ``binary`` a model (or, without one, every model) is configured with."""
        if model_raw is not None and model_raw.get("binary") is not None and at is not None:
            return binary_value(str(model_raw["binary"]), at.file.directory)
        server_binary = self.server.get("binary")
        if server_binary is None:
            return None
        where, raw = server_binary
        return binary_value(str(raw), where.file.directory)

    def _binary_flags(self, configured: str | None) -> BinaryFlags | None:
        return self._binaries.flags_for(configured)

    def _env(self, raw: Mapping[str, Any], at: At) -> tuple[tuple[str, str], ...]:
        pairs: list[tuple[str, str]] = []
        for name, value in raw.items():
            owned = env_owned_by_llamasup(name)
            if owned is not None:
                self.error(
                    at, f"{name} would set {owned.name}, which llamasup owns: {owned.why}", name
                )
                continue
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            pairs.append((name, text))
        return tuple(sorted(pairs))

    def _model(
        self, name: str, at: At, raw: Mapping[str, Any], server: ServerConfig
    ) -> ModelConfig | None:
        errors_before = len(self.log.errors)
        directory = at.file.directory
        command = raw.get("command")
        path = raw.get("path")
        binary = (
            None if command is not None else self._binary_flags(self._configured_binary(raw, at))
        )
        args_at = At(at.file, (*at.path, "args"))
        args = self._flags(raw.get("args"), args_at, Layer.MODEL, binary)
        if binary is not None:
            try:
                for_binary(merge(server.base_args, args).argv(), binary)
            except FlagError as exc:
                self.error(args_at, str(exc))
        if command is not None:
            command = self._command(name, [str(part) for part in command], at)
            if command:  # its program resolves like ``binary``: relative to this file
                command[0] = binary_value(command[0], directory)
            if "args" in raw:
                self.error(at, "a command model takes its arguments inside command", "args")
            for key in ("binary",):
                if key in raw:
                    self.error(at, f"{key} applies to llama-server models only", key)
        else:
            if "health" in raw:
                self.error(
                    at,
                    "health applies to command models; llama-server sidecars use /health",
                    "health",
                )
            sources = sorted(_SOURCE_FLAGS.intersection(s.name for s in args.settings))
            if path is None and not sources:
                self.error(
                    at,
                    "a model needs path (a GGUF file), command, or a model source flag "
                    "such as --hf-repo in args",
                )
            if path is not None and sources:
                self.error(at, f"path and {sources[0]} both name the model; keep one", "args")
        model_path = None if path is None else resolve_path(str(path), directory)
        if model_path is not None and not model_path.is_file():
            self.log.warn(
                at.file, (*at.path, "path"), f"model file {model_path} does not exist (yet)"
            )
        ttl = ttl_value(raw["ttl"]) if "ttl" in raw else server.idle_ttl
        try:
            memory, memory_devices = declared_memory(raw.get("memory"))
        except ValueError as exc:
            self.error(at, str(exc), "memory")
            memory, memory_devices = None, ()
        model = ModelConfig(
            id=name,
            source=_source(at),
            path=model_path,
            command=None if command is None else tuple(command),
            health=str(raw.get("health", "/health")),
            binary=None
            if raw.get("binary") is None
            else binary_value(str(raw["binary"]), directory),
            args=args,
            aliases=tuple(raw.get("aliases", ())),
            env=self._env(raw.get("env", {}), At(at.file, (*at.path, "env"))),
            pinned=bool(raw.get("pinned", False)),
            preload=bool(raw.get("preload", False)),
            ttl=None if raw.get("pinned") else ttl,
            memory=memory,
            memory_devices=memory_devices,
            group=raw.get("group"),
            description=str(raw.get("description", "")),
            concurrency=raw.get("concurrency"),
            queue=int(raw.get("queue", 100)),
            unlisted=bool(raw.get("unlisted", False)),
            upstream_model=raw.get("upstream_model"),
            priority=int(raw.get("priority", 0)),
            request=self._request(raw.get("request"), At(at.file, (*at.path, "request"))),
            send_loading_state=None
            if raw.get("send_loading_state") is None
            else bool(raw["send_loading_state"]),
        )
        return model if len(self.log.errors) == errors_before else None

    def _command(self, name: str, command: list[str], at: At) -> list[str]:
        if not any("${PORT}" in part for part in command):
            self.error(
                at,
                "command must contain ${PORT} so llamasup can give the upstream its port",
                "command",
            )
        return [part.replace("${MODEL_ID}", name) for part in command]

    def _agent(
        self, name: str, at: At, raw: Any, models: Mapping[str, ModelConfig]
    ) -> AgentConfig | None:
        if not isinstance(raw, dict):
            raw = {"flags": raw}
            flags_at = at
        else:
            flags_at = At(at.file, (*at.path, "flags"))
        errors_before = len(self.log.errors)
        flags = self._flags(raw.get("flags"), flags_at, Layer.AGENT)
        request = self._request(raw.get("request"), At(at.file, (*at.path, "request")))
        model_name = raw.get("model")
        model_id = None
        if model_name is not None:
            target = _find(models, str(model_name))
            if target is None and model_name not in self.sections["models"]:
                self.error(
                    at,
                    f"unknown model {model_name!r}; defined models: "
                    f"{', '.join(sorted(models)) or 'none'}",
                    "model",
                )
            model_id = target.id if target is not None else str(model_name)
        if len(self.log.errors) != errors_before:
            return None
        return AgentConfig(
            name=name,
            source=_source(at),
            flags=flags,
            model=model_id,
            description=str(raw.get("description", "")),
            priority=None if raw.get("priority") is None else int(raw["priority"]),
            request=request,
        )

    def _request(self, raw: Any, at: At) -> RequestRules:
        rules, problems = request_rules(raw)
        for suffix, message in problems:
            self.error(at, message, *suffix)
        return rules


def build_profiles(
    files: Sequence[ParsedFile],
    log: IssueLog,
    *,
    environ: Mapping[str, str],
    source: str,
    revision: str,
) -> Profiles | None:
    builder = _Builder(log, environ)
    for parsed in files:
        builder.add_file(parsed)
    check_spawn_placeholders(files, log)
    return builder.finish(source, revision, [p.name for p in files])


def _find(models: Mapping[str, ModelConfig], name: str) -> ModelConfig | None:
    if name in models:
        return models[name]
    return next((m for m in models.values() if name in m.aliases), None)


def _source(at: At) -> Source:
    return Source(at.file.name, at.file.doc.line_of(at.path))


def _token_index(raw: Any, flag: str) -> int | None:
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            if str(item) == flag or str(item).startswith(f"{flag}="):
                return i
    return None
