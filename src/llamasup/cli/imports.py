"""``llamasup import llama-swap`` and ``llamasup import sidecar-env``: migrate a configuration.

Both write a profile set that validates (it is loaded before anything is written), print
every behaviour that is lost or changed as ``warning: KEY.PATH: ...`` on stderr (or as JSON
with ``--output json``), and exit 0 written, 1 input invalid or unconvertible, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from llamasup.cli.profiles import render_view
from llamasup.errors import ProfileError
from llamasup.migrate.draft import Draft, InputError
from llamasup.migrate.emit import render_directory, render_single, validate
from llamasup.migrate.llama_swap.convert import import_swap
from llamasup.migrate.sidecar_env import import_sidecar_env
from llamasup.profiles.types import Profiles
from llamasup.spec.resolve import resolve

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
_ENV_LINE = re.compile(r"^\s*(?:export\s+|set\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def run_import_swap(args: argparse.Namespace) -> int:
    config: Path = args.config
    try:
        text = config.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return _usage(args, f"{config}: cannot read: {exc}")
    if args.listen and not re.match(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$", args.listen):
        return _usage(args, f"--listen {args.listen}: expected HOST:PORT")

    workdir = (args.workdir or Path.cwd()).resolve()

    def build(anchor: Path) -> Draft:
        return import_swap(
            text,
            source=str(config),
            environ=os.environ,
            anchor=anchor,
            workdir=workdir,
            listen=args.listen,
        )

    return _run(args, build)


def run_import_sidecar(args: argparse.Namespace) -> int:
    env: Mapping[str, str] = os.environ
    source = "the environment"
    if args.env_file is not None:
        try:
            env = read_env_file(args.env_file)
        except (OSError, UnicodeDecodeError) as exc:
            return _usage(args, f"{args.env_file}: cannot read: {exc}")
        source = str(args.env_file)
    return _run(args, lambda _anchor: import_sidecar_env(env, source=f"llama-sidecar ({source})"))


def read_env_file(path: Path) -> dict[str, str]:
    """NAME=VALUE lines (``export``/``set`` prefixes, ``#`` comments, quotes) as a service has."""
    values: dict[str, str] = {}
    for line in path.read_text("utf-8-sig").splitlines():
        match = _ENV_LINE.match(line)
        if match is None or line.lstrip().startswith("#"):
            continue
        value = match.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[match.group(1)] = value
    return values


def _run(args: argparse.Namespace, build: Callable[[Path], Draft]) -> int:
    if args.out in ("json", "text", "table") and not Path(args.out).suffix:
        # everywhere else -o is the output format; here it is the file to write
        return _usage(
            args,
            f"-o names the profile file to write; for a {args.out} report use --output "
            f"{args.out if args.out != 'table' else 'text'} (or -o ./{args.out} for that file)",
        )
    out = Path(args.out) if args.out else None
    as_dir = out is not None and (str(args.out).endswith(("/", os.sep)) or out.is_dir())
    anchor = Path.cwd().resolve() if out is None else (out if as_dir else out.parent).resolve()
    try:
        draft = build(anchor)
    except InputError as exc:
        return _invalid(args, "cannot import", exc.problems)
    files = render_directory(draft) if as_dir else render_single(draft)
    if out is not None and not as_dir:
        files = {out.name: next(iter(files.values()))}  # messages name the file to write
    try:
        profiles = validate(files, anchor, os.environ)
    except ProfileError as exc:
        problems = [str(issue) for issue in exc.issues]
        what = "the imported profiles would not validate, so nothing was written"
        return _invalid(args, what, problems, draft)
    targets = {anchor / name: text for name, text in files.items()} if as_dir else {}
    if out is not None and not as_dir:
        targets = {out: next(iter(files.values()))}
    refusal = _refusal(targets, anchor if as_dir else None, args.force)
    if refusal:
        return _usage(args, refusal)
    for path, text in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if args.output == "json":
        _report_json(draft, profiles, targets, files if out is None else None)
    else:
        if out is None:
            sys.stdout.write(next(iter(files.values())))
            sys.stdout.flush()  # the profile before the warnings, on a terminal
        _report_text(draft, profiles, out)
    return EXIT_OK


def _refusal(targets: Mapping[Path, str], directory: Path | None, force: bool) -> str:
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        return f"{', '.join(existing)} exists; pass --force to overwrite"
    if directory is not None and directory.is_dir():
        ours = {p.name for p in targets}
        foreign = sorted(
            p.name
            for p in directory.iterdir()
            if p.suffix in (".yaml", ".yml") and p.name not in ours and not p.name.startswith(".")
        )
        if foreign:
            return (
                f"{directory} holds other profiles ({', '.join(foreign)}) that would merge into "
                "the imported set; choose an empty directory"
            )
    return ""


def model_views(profiles: Profiles) -> dict[str, dict[str, Any]]:
    """What ``llamasup render MODEL`` shows for each imported model."""
    return {model_id: render_view(resolve(profiles, model_id)) for model_id in profiles.models}


def _report_json(
    draft: Draft, profiles: Profiles, targets: Mapping[Path, str], stdout: Mapping[str, str] | None
) -> None:
    report: dict[str, Any] = {
        "written": [str(p) for p in targets],
        "warnings": [w.as_dict() for w in draft.warnings],
        "set_env": [{"name": k, "value": v} for k, v in draft.secrets.items()],
        "profile_warnings": [issue.as_dict() for issue in profiles.warnings],
        "models": {
            model_id: {"kind": view["kind"], "argv": view["argv"], "key": view["key"]}
            for model_id, view in model_views(profiles).items()
        },
        "agents": sorted(profiles.agents),
    }
    if stdout is not None:
        report["profile"] = next(iter(stdout.values()))
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _report_text(draft: Draft, profiles: Profiles, out: Path | None) -> None:
    for warning in draft.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for issue in profiles.warnings:
        print(f"note: {issue}", file=sys.stderr)
    for name, why in draft.secrets.items():
        print(f"set {name} before serving: {why}", file=sys.stderr)
    where = str(out) if out is not None else "stdout"
    models = len(profiles.models)
    print(
        f"imported {models} model{'s' * (models != 1)}, {len(profiles.agents)} agent(s), "
        f"{len(draft.warnings)} warning(s) → {where}",
        file=sys.stderr,
    )
    if out is not None and profiles.models:
        first = next(iter(profiles.models))
        print(f"check a model: llamasup render {first} -f {out}", file=sys.stderr)


def _invalid(
    args: argparse.Namespace, what: str, problems: list[str], draft: Draft | None = None
) -> int:
    warnings = draft.warnings if draft is not None else []
    if args.output == "json":
        report = {
            "error": what,
            "problems": problems,
            "warnings": [w.as_dict() for w in warnings],
            "exit_code": EXIT_INVALID,
        }
        json.dump(report, sys.stdout)
        sys.stdout.write("\n")
    else:
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"llamasup: {what} ({len(problems)} problem(s))", file=sys.stderr)
    return EXIT_INVALID


def _usage(args: argparse.Namespace, message: str) -> int:
    if args.output == "json":
        json.dump({"error": message, "exit_code": EXIT_USAGE}, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"llamasup: {message}", file=sys.stderr)
    return EXIT_USAGE
