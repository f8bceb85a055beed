"""``llamasup validate`` and ``llamasup render``: offline commands on a profile set."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llamasup.errors import LlamasupError, ProfileError, ProfileIssue
from llamasup.profiles.discover import default_profile_path
from llamasup.profiles.load import load_profiles
from llamasup.profiles.types import Profiles
from llamasup.service.auth import ApiKeyError, load_keys
from llamasup.spec.childenv import is_scrubbed
from llamasup.spec.hostcheck import host_issues
from llamasup.spec.resolve import Resolved, resolve, split_target

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _load(path: Path | None) -> tuple[Path, Profiles]:
    root = path if path is not None else default_profile_path()
    return root, load_profiles(root)


def run_validate(args: argparse.Namespace) -> int:
    root = args.path if args.path is not None else default_profile_path()
    if not root.exists():
        _fail(args, f"{root}: no such file or directory", EXIT_USAGE)
        return EXIT_USAGE
    check_host = bool(getattr(args, "check_host", False))
    try:
        profiles = load_profiles(root)
    except ProfileError as exc:
        _report_invalid(args, root, exc.issues, exc.warnings)
        return EXIT_INVALID
    warnings = [*profiles.warnings, *_key_warnings(profiles)]
    if check_host:
        # on the host, what keeps a model (or serve) from starting is an error, not a note
        errors = [*host_issues(profiles, os.environ), *_key_warnings(profiles)]
        if errors:
            located = {(e.file, e.line, e.path) for e in errors}
            kept = [w for w in profiles.warnings if (w.file, w.line, w.path) not in located]
            _report_invalid(args, root, tuple(errors), tuple(kept))
            return EXIT_INVALID
    if args.output == "json":
        _print_json(
            {
                "valid": True,
                "source": str(root),
                "files": list(profiles.files),
                "revision": profiles.revision,
                "host_checked": check_host,
                "errors": [],
                "warnings": [w.as_dict() for w in warnings],
                "models": sorted(profiles.models),
                "agents": sorted(profiles.agents),
            }
        )
        return EXIT_OK
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    checked = "; every model can start on this host" if check_host else ""
    print(
        f"{root}: valid ({_count(len(profiles.files), 'file')}, revision {profiles.revision}): "
        f"{_count(len(profiles.models), 'model')}, {_count(len(profiles.agents), 'agent')}"
        f"{checked}"
    )
    return EXIT_OK


def _key_warnings(profiles: Profiles) -> list[ProfileIssue]:
    """API keys whose value cannot be read in this environment: a warning, since validate
    often runs somewhere else than serve (CI), but `serve` here would refuse to start."""
    configs = profiles.server.api_keys
    errors: list[ApiKeyError] = []
    for config in configs:
        try:
            load_keys([config], os.environ)
        except ApiKeyError as exc:
            errors.append(exc)
    if configs and not errors:
        try:  # readable one by one; together they may still clash (one value, two keys)
            load_keys(configs, os.environ)
        except ApiKeyError as exc:
            errors.append(exc)
    why = "(in this environment, serve would not start)"
    return [
        ProfileIssue(e.source.file, e.source.line, "server.api_keys", f"{e.detail} {why}")
        for e in errors
    ]


def _report_invalid(
    args: argparse.Namespace,
    root: Path,
    issues: tuple[ProfileIssue, ...],
    warnings: tuple[ProfileIssue, ...] = (),
) -> None:
    if args.output == "json":
        _print_json(
            {
                "valid": False,
                "source": str(root),
                "host_checked": bool(getattr(args, "check_host", False)),
                "errors": [issue.as_dict() for issue in issues],
                "warnings": [issue.as_dict() for issue in warnings],
            }
        )
        return
    for issue in issues:
        print(f"error: {issue}", file=sys.stderr)
    for issue in warnings:
        print(f"warning: {issue}", file=sys.stderr)
    print(f"{root}: invalid ({_count(len(issues), 'error')})", file=sys.stderr)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def run_render(args: argparse.Namespace) -> int:
    model, agent = split_target(args.target)
    if args.agent:
        if agent is not None and agent != args.agent:
            _fail(args, f"{args.target} names agent {agent!r} but --agent says {args.agent!r}")
            return EXIT_USAGE
        agent = args.agent
    root = args.path if args.path is not None else default_profile_path()
    if not root.exists():
        _fail(args, f"{root}: no such file or directory", EXIT_USAGE)
        return EXIT_USAGE
    try:
        _, profiles = _load(root)
        resolved = resolve(profiles, model or None, agent)
    except ProfileError as exc:
        _report_invalid(args, args.path or default_profile_path(), exc.issues)
        return EXIT_INVALID
    except LlamasupError as exc:
        _fail(args, str(exc))
        return EXIT_INVALID
    view = render_view(resolved)
    if args.output == "json":
        _print_json(view)
        return EXIT_OK
    _print_render(view)
    return EXIT_OK


def render_view(resolved: Resolved) -> dict[str, Any]:
    spec = resolved.spec
    binary = spec.binary or "llama-server"
    argv = spec.command_line(binary, "127.0.0.1", 0)
    if spec.kind == "llama-server":
        argv = [*argv[:-1], "<port>"]
    else:
        argv = [part.replace("${PORT}", "<port>") for part in (binary, *spec.args)]
        argv = [part.replace("${HOST}", "127.0.0.1") for part in argv]
    inherited = sorted(name for name in os.environ if _scrubbed(name, spec.env_map))
    return {
        "model": spec.model,
        "agent": resolved.agent.name if resolved.agent else None,
        "kind": spec.kind,
        "key": spec.key,
        "binary": spec.binary or None,
        "argv": argv,
        "env": {"set": dict(spec.env), "removed": inherited},
        "request_defaults": dict(resolved.request_defaults),
        "request_force": dict(resolved.request_force),
        "request_strip": list(resolved.request_strip),
        "upstream_model": spec.served_name,
    }


def _scrubbed(name: str, kept: Mapping[str, str]) -> bool:
    return is_scrubbed(name) and name not in kept


def _print_render(view: Mapping[str, Any]) -> None:
    agent = f" with agent {view['agent']}" if view["agent"] else ""
    print(f"model:   {view['model']}{agent} ({view['kind']})")
    print(f"key:     {view['key']}")
    print(f"argv:    {shlex.join(view['argv'])}")
    env = view["env"]
    for name, value in env["set"].items():
        print(f"env:     {name}={shlex.quote(value)}")
    if env["removed"]:
        print(f"env:     not inherited: {', '.join(env['removed'])}")
    defaults = view["request_defaults"]
    shown = json.dumps(defaults, sort_keys=True) if defaults else "(none)"
    print(f"request defaults: {shown}")
    if view["request_force"]:
        print(f"request forced:   {json.dumps(view['request_force'], sort_keys=True)}")
    if view["request_strip"]:
        print(f"request stripped: {', '.join(view['request_strip'])}")


def _fail(args: argparse.Namespace, message: str, code: int = EXIT_INVALID) -> None:
    if getattr(args, "output", "text") == "json":
        _print_json({"error": message, "exit_code": code})
    else:
        print(f"llamasup: {message}", file=sys.stderr)


def _print_json(value: object) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
