"""What a llama-swap config means to llama-swap (its own loader's output, recorded in the
corpus) against what the imported profile set means to llamasup.

``disagreements`` returns every difference that no import warning names. llama-swap's side
comes from ``scripts/llama_swap_oracle`` (argv after macros and ports, env, aliases, ttl,
filters, groups with the implicit default group); llamasup's from the loaded profiles
(``resolve`` of each model and name, groups and limits). Rules are llama-swap's, read from
its source: ``internal/router/group.go`` (who a start unloads), ``internal/server/filters.go``
(strip, then setParams, then setParamsByID of the requested name),
``internal/process/process_command.go`` (checkEndpoint goes through the proxy URL).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from llamasup.errors import ResolveError
from llamasup.flags.flagset import lookup, parse
from llamasup.flags.vocabulary import Kind, Layer
from llamasup.migrate.draft import Draft
from llamasup.profiles.types import ModelConfig, Profiles
from llamasup.spec.resolve import resolve

#: flags that say where llama-server listens or what it loads: the profile says these itself
_PLACED = {"--port", "--host", "--model", "--alias"}
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}


@dataclass(frozen=True)
class Finding:
    """One difference in meaning: ``cause`` groups them for the corpus numbers."""

    cause: str
    what: str

    def __str__(self) -> str:
        return f"{self.cause}: {self.what}"


@dataclass
class Outcome:
    """What the import did with one config: a draft and its profiles, or the problems."""

    draft: Draft | None
    profiles: Profiles | None
    problems: list[str]


def disagreements(expected: Mapping[str, Any], outcome: Outcome, workdir: str) -> list[Finding]:
    if "error" in expected:
        if outcome.profiles is not None:
            return [Finding("accepts what llama-swap refuses", expected["error"])]
        said = "\n".join(outcome.problems).lower()
        terms = expected.get("refusal_mentions") or []
        if terms and not any(term.lower() in said for term in terms):
            return [Finding("refusal does not name the cause", f"{terms} not in {said[:200]}")]
        return []
    if outcome.profiles is None or outcome.draft is None:
        first = outcome.problems[0] if outcome.problems else "?"
        return [Finding("refuses what llama-swap accepts", first)]
    return _Compare(expected, outcome.draft, outcome.profiles, workdir).run()


class _Compare:
    def __init__(
        self, expected: Mapping[str, Any], draft: Draft, profiles: Profiles, workdir: str
    ) -> None:
        self.expected = expected
        self.draft = draft
        self.profiles = profiles
        self.workdir = workdir
        self.findings: list[Finding] = []
        self.ids: dict[str, str] = {}  # llama-swap id → llamasup id

    def warned(self, *prefixes: str, mentioning: str = "") -> bool:
        for warning in self.draft.warnings:
            for prefix in prefixes:
                under = warning.path.startswith((f"{prefix}.", f"{prefix}["))
                if (warning.path == prefix or under) and mentioning in str(warning):
                    return True
        return False

    def find(self, cause: str, what: str, *excused_by: str, mentioning: str = "") -> None:
        if not excused_by or not self.warned(*excused_by, mentioning=mentioning):
            self.findings.append(Finding(cause, what))

    def run(self) -> list[Finding]:
        models: Mapping[str, Any] = self.expected["models"]
        for orig, meaning in sorted(models.items()):
            model = self._model_for(orig)
            if model is None:
                self.find("model lost", orig, f"models.{orig}")
                continue
            self.ids[orig] = model.id
            _ModelCompare(self, orig, meaning, model).run()
        self._groups()
        self._preload()
        return self.findings

    def _model_for(self, orig: str) -> ModelConfig | None:
        model = self.profiles.find_model(orig)
        if model is not None:
            return model
        for warning in self.draft.warnings:
            renamed = re.search(r"imported as '([^']+)'", warning.message)
            if warning.path == f"models.{orig}" and renamed:
                return self.profiles.models.get(renamed.group(1))
        return None

    def _groups(self) -> None:
        router = self.expected.get("router")
        if router == "matrix":
            self.find("groups", "matrix router", "matrix", "routing")
            return
        groups: Mapping[str, Any] = self.expected.get("groups") or {}
        group_of = {m: gid for gid, g in groups.items() for m in g["Members"]}
        ids = self.ids
        wrong = []
        for target in ids:
            for other in ids:
                if other == target:
                    continue
                theirs = _swap_unloads(groups, group_of, target, other)
                ours = _llamasup_unloads(self.profiles, ids[target], ids[other])
                if theirs != ours:
                    gids = {group_of.get(target), group_of.get(other)}
                    excused = [f"groups.{g}" for g in gids if g] + ["routing", "groups"]
                    if not self.warned(*excused):
                        verb = "unloads" if theirs else "keeps"
                        wrong.append(f"starting {target} {verb} {other} in llama-swap")
        if wrong:
            self.findings.append(Finding("groups", f"{len(wrong)} pairs, e.g. {wrong[0]}"))

    def _preload(self) -> None:
        for i, name in enumerate(self.expected.get("preload") or []):
            model = self.profiles.models.get(self.ids.get(name, ""))
            if model is None or not (model.preload or model.pinned):
                self.find("preload", name, f"hooks.on_startup.preload[{i}]", "hooks")


def _swap_unloads(
    groups: Mapping[str, Any], group_of: Mapping[str, str], target: str, other: str
) -> bool:
    """internal/router/group.go groupSwapper.EvictionFor, for one running model."""
    tg, og = group_of.get(target), group_of.get(other)
    if tg is None or og is None:
        return False
    if tg == og:
        return bool(groups[tg]["Swap"])
    return bool(groups[tg]["Exclusive"]) and not groups[og]["Persistent"]


def _llamasup_unloads(profiles: Profiles, target: str, other: str) -> bool:
    """Whether starting ``target`` stops a running, idle ``other`` under the profile's limits."""
    mine, theirs = profiles.models[target], profiles.models[other]
    if theirs.pinned:
        return False
    if profiles.server.max_sidecars == 1:
        return True
    tg, og = mine.group, theirs.group
    if tg is not None and tg == og:
        return profiles.group_limit(tg) < 2
    group = profiles.groups.get(tg) if tg is not None else None
    if group is None or not group.exclusive:
        return False
    other_group = profiles.groups.get(og) if og is not None else None
    return other_group is None or not other_group.persistent


class _ModelCompare:
    def __init__(
        self, outer: _Compare, orig: str, meaning: Mapping[str, Any], model: ModelConfig
    ) -> None:
        self.outer = outer
        self.orig = orig
        self.meaning = meaning
        self.model = model
        self.where = f"models.{orig}"
        self.spec = resolve(outer.profiles, model.id).spec

    def find(self, cause: str, what: str, *keys: str, mentioning: str = "") -> None:
        paths = [f"{self.where}.{key}" if key else self.where for key in keys]
        self.outer.find(cause, f"{self.orig}: {what}", *paths, mentioning=mentioning)

    def run(self) -> None:
        argv, env = _peel_env(list(self.meaning["argv"]))
        env += [item for item in self.meaning["env"] or [] if "=" in item]
        port = urlsplit(self.meaning["proxy"]).port
        ours_env = [f"{k}={v}" for k, v in self.model.env]
        if self.spec.kind == "command":
            ours, prefix = _peel_env([self.spec.binary, *self.spec.args])
            self._command(argv, ours, port)
            ours_env += [p.replace("${PORT}", str(port)) for p in prefix]
        else:
            self._server(argv)
        self._env(env, ours_env)
        self._upstream()
        self._lifecycle()
        self._names()

    def _path(self, value: str, *, program: bool = True) -> str:
        """As llama-swap's process saw it: relative to llama-swap's working directory (a
        program only with a directory part: a bare name is looked up on PATH)."""
        if value.startswith(("/", "~")) or "://" in value or (program and "/" not in value):
            return value
        return os.path.normpath(os.path.join(self.outer.workdir, value))

    def _command(self, argv: list[str], ours: list[str], port: int | None) -> None:
        ours = [w.replace("${PORT}", str(port)).replace("${HOST}", "127.0.0.1") for w in ours]
        theirs = [self._path(argv[0]), *argv[1:]]
        if ours != theirs:
            self.find("argv", f"{theirs} became {ours}", "cmd", mentioning="--")

    def _server(self, argv: list[str]) -> None:
        theirs = self._server_argv(argv)
        if theirs is None:
            self.find("argv", f"{argv}: llamasup's flag model refuses it, yet a llama-server model")
            return
        binary, path, flags = theirs
        ours_flags = list(self.spec.args)
        if self.spec.model_path is not None:
            ours_flags = ours_flags[2:]
        ours_flags = ours_flags[:-2]  # --alias <id>
        if binary != self.spec.binary:
            self.find("argv", f"program {binary} became {self.spec.binary}", "cmd")
        if path != self.spec.model_path:
            self.find("argv", f"model {path} became {self.spec.model_path}", "cmd")
        if tuple(flags) != tuple(ours_flags):
            self.find("argv", f"flags {flags} became {ours_flags}", "cmd")

    def _server_argv(self, argv: list[str]) -> tuple[str, str | None, list[str]] | None:
        kept: list[str] = []
        path: str | None = None
        i = 1
        while i < len(argv):
            word = argv[i]
            name, eq, inline = word.partition("=") if word.startswith("--") else (word, "", "")
            definition = lookup(name)
            flag = definition.name if definition is not None else name
            owned = definition is not None and definition.kind in (Kind.OWNED, Kind.REMOVED)
            if flag in _PLACED or owned:
                takes = definition is not None and definition.value.arity > 0 and not eq
                value = argv[i + 1] if takes and i + 1 < len(argv) else inline
                if flag == "--model":
                    path = self._path(value, program=False)
                elif flag == "--host" and value not in _LOOPBACK:
                    self.find("host", f"--host {value}", "cmd", mentioning="--host")
                elif flag not in _PLACED:
                    self.find("argv", f"{flag} dropped", "cmd", mentioning=flag)
                i += 2 if takes else 1
                continue
            kept.append(word)
            i += 1
        parsed = parse(kept, Layer.MODEL)
        if parsed.errors:
            return None
        return self._path(argv[0]), path, list(parsed.flags.argv())

    def _env(self, pairs: Sequence[str], our_pairs: Sequence[str]) -> None:
        theirs = dict(item.partition("=")[::2] for item in pairs)
        ours = dict(item.partition("=")[::2] for item in our_pairs)
        for name, value in theirs.items():
            if ours.get(name) != value:
                self.find("env", f"{name}={value} became {ours.get(name)}", "env", "cmd")
        for name in ours.keys() - theirs.keys():
            self.find("env", f"{name} added", "env", "cmd")

    def _upstream(self) -> None:
        proxy = urlsplit(self.meaning["proxy"])
        if proxy.hostname not in _LOOPBACK or proxy.path not in ("", "/"):
            self.find("proxy", self.meaning["proxy"], "proxy")
        check = self.meaning["checkEndpoint"].strip()
        if check == "none":
            self.find("health", "checkEndpoint none", "checkEndpoint")
            return
        url = urlsplit(check)
        path = url.path if url.path.startswith("/") else f"/{url.path}"
        path += f"?{url.query}" if url.query else ""
        if self.spec.health_path != path:
            self.find("health", f"{check} became {self.spec.health_path}", "checkEndpoint")
        if self.meaning.get("cmdStop"):
            self.find("cmdStop", self.meaning["cmdStop"], "cmdStop")

    def _lifecycle(self) -> None:
        model, meaning = self.model, self.meaning
        ttl = meaning["ttl"] or None
        if (model.ttl or None) != ttl:
            self.find("ttl", f"{ttl} became {model.ttl}", "ttl")
        if model.unlisted != meaning["unlisted"]:
            self.find("unlisted", str(meaning["unlisted"]), "unlisted")
        if (model.upstream_model or "") != meaning.get("useModelName", ""):
            self.find("useModelName", str(meaning.get("useModelName")), "useModelName")
        if (model.concurrency or 0) != meaning["concurrencyLimit"]:
            self.find("concurrency", str(meaning["concurrencyLimit"]), "concurrencyLimit")

    def _names(self) -> None:
        """Every name that reached the model reaches it, with the request edits it made."""
        by_id: Mapping[str, Any] = self.meaning.get("setParamsByID") or {}
        for i, name in enumerate([self.orig, *(self.meaning["aliases"] or [])]):
            where = ["aliases", f"filters.setParamsByID.{name}", ""] if i else [""]
            try:
                resolved = resolve(self.outer.profiles, name)
            except ResolveError:
                self.find("alias", f"{name} no longer routes", *where, mentioning=name)
                continue
            if resolved.model.id != self.model.id:
                self.find("alias", f"{name} routes to {resolved.model.id}", *where, mentioning=name)
                continue
            force = {**(self.meaning.get("setParams") or {}), **(by_id.get(name) or {})}
            got = dict(getattr(resolved, "request_force", {}))
            if got != force:
                keys = [
                    "filters.setParams",
                    f"filters.setParamsByID.{name}",
                    f"filters.setParamsByID.{self.orig}",
                ]
                self.find("setParams", f"{name}: {force} became {got}", *keys)
            strip = set(self.meaning.get("stripParams") or [])
            if set(getattr(resolved, "request_strip", ())) != strip:
                self.find("stripParams", f"{name}: {sorted(strip)}", *_STRIP_KEYS)


_STRIP_KEYS = ("filters.stripParams", "filters.strip_params")


def _peel_env(argv: list[str]) -> tuple[list[str], list[str]]:
    """``env K=V ... program args`` → (program args, [K=V, ...])."""
    if not argv or os.path.basename(argv[0]) != "env":
        return argv, []
    rest, pairs = argv[1:], []
    while rest and "=" in rest[0] and not rest[0].startswith("-"):
        pairs.append(rest.pop(0))
    return rest, pairs
