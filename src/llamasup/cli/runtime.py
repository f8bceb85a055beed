"""``llamasup runtime install`` and ``llamasup runtime which``: the llama-server binary."""

from __future__ import annotations

import argparse
import json
import os
import sys

from llamasup.core.paths import cache_root
from llamasup.errors import RuntimeInstallError, RuntimeNotFoundError
from llamasup.runtime import install as runtime_install
from llamasup.runtime import locate, toolchains

EXIT_OK, EXIT_FAILED = 0, 1


def _progress(message: str) -> None:
    print(f"[runtime install] {message}", file=sys.stderr, flush=True)


def run_install(args: argparse.Namespace) -> int:
    backend: locate.Backend
    if args.backend == "auto":
        choice = toolchains.choose_backend(os.environ)
        _progress(f"--backend auto: {choice.backend} ({choice.reason})")
        backend = choice.backend
    else:
        backend = args.backend
    try:
        path = runtime_install.install(
            force=args.force, sdist=args.sdist, jobs=args.jobs, progress=_progress, backend=backend
        )
    except RuntimeInstallError as exc:
        print(f"llamasup: runtime install failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # an unwritable cache directory, a full disk
        print(
            f"llamasup: runtime install failed: {exc} "
            f"(cache: {cache_root()}; set LLAMASUP_CACHE_DIR to use another place)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(path)
    return EXIT_OK


def run_which(args: argparse.Namespace) -> int:
    try:
        resolved = locate.resolve_binary(None, os.environ)
    except RuntimeNotFoundError as exc:
        if args.output == "json":
            print(json.dumps({"error": str(exc), "exit_code": EXIT_FAILED}, indent=2))
        else:
            print(f"llamasup: {exc}", file=sys.stderr)
        return EXIT_FAILED
    version = locate.binary_version(resolved.path)
    if args.output == "json":
        view = {
            "path": str(resolved.path),
            "source": resolved.source,
            "backend": resolved.backend,
            "version": version,
        }
        print(json.dumps(view, indent=2))
    else:
        shown = version or "unknown (`--version` failed)"
        backend = f", {resolved.backend} backend" if resolved.backend else ""
        print(f"{resolved.path}  (from {resolved.source}{backend}, version {shown})")
    return EXIT_OK
