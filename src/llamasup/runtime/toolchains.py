"""What building each llama-server backend needs, found on this host, and what ``auto`` picks.

A :class:`Toolchain` is the backend's cmake switches (and environment) with the compiler it
found; :func:`find_toolchain` raises :class:`RuntimeInstallError` naming the missing piece and
how to get it. The option names are llama.cpp b11434's (``ggml/CMakeLists.txt``:
``GGML_CUDA``, ``GGML_HIP``, ``GGML_VULKAN``, ``GGML_METAL``, ``GGML_METAL_EMBED_LIBRARY``);
the HIP compiler setting follows the sdist's ``docs/build.md`` and CI (``CMAKE_HIP_COMPILER`` =
``$(hipconfig -l)/clang``, ``HIP_PATH`` = ``$(hipconfig -R)``).

:func:`choose_backend` is ``--backend auto``: a GPU the host shows (``nvidia-smi -L``,
``rocm-smi``, ``vulkaninfo --summary``) whose toolchain is here, or Metal on Apple silicon, else
the CPU. Nothing here builds anything; the tools it runs only report.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llamasup.errors import RuntimeInstallError
from llamasup.runtime.locate import Backend

PROBE_TIMEOUT = 15.0

#: where toolkits install themselves when their bin directory is not on PATH
CUDA_HOMES: tuple[Path, ...] = (Path("/usr/local/cuda"),)
ROCM_HOMES: tuple[Path, ...] = (Path("/opt/rocm"),)
INCLUDE_DIRS: tuple[Path, ...] = (Path("/usr/include"), Path("/usr/local/include"))

CUDA_HINT = (
    "install the CUDA toolkit (https://developer.nvidia.com/cuda-downloads; Debian/Ubuntu: "
    "`apt-get install nvidia-cuda-toolkit`) and put nvcc on PATH or set CUDA_HOME"
)
ROCM_HINT = (
    "install ROCm with hipBLAS and rocBLAS "
    "(https://rocm.docs.amd.com/projects/install-on-linux/) and put its bin directory on PATH "
    "or set ROCM_PATH"
)
VULKAN_HINT = (
    "install the Vulkan SDK (https://vulkan.lunarg.com/sdk/home, then source its setup-env.sh "
    "so VULKAN_SDK is set), or on Debian/Ubuntu `apt-get install libvulkan-dev glslc "
    "spirv-headers`"
)
METAL_HINT = "install the Xcode Command Line Tools (`xcode-select --install`) or Xcode"
#: Metal is on by default in ggml's CMake on Apple: every other backend turns it off there
_NO_METAL = ("-DGGML_METAL=OFF",)


@dataclass(frozen=True)
class Toolchain:
    """How to configure one backend: cmake switches, extra environment, what was found."""

    backend: Backend
    cmake_options: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    found: str = ""


def _search_path(environ: Mapping[str, str], extra: Sequence[Path]) -> str:
    entries = [environ.get("PATH", os.defpath), *(str(d) for d in extra)]
    return os.pathsep.join(entry for entry in entries if entry)


def _which(name: str, environ: Mapping[str, str], extra: Sequence[Path] = ()) -> str | None:
    return shutil.which(name, path=_search_path(environ, extra))


def _homes(environ: Mapping[str, str], names: Sequence[str], known: Sequence[Path]) -> list[Path]:
    return [Path(environ[name]) for name in names if environ.get(name)] + list(known)


def _output(command: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """The stripped stdout of a reporting tool, or None when it fails or says nothing."""
    try:
        done = subprocess.run(
            list(command),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=PROBE_TIMEOUT,
            check=False,
            env=dict(environ),
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    text = done.stdout.strip()
    return text if done.returncode == 0 and text else None


def _shown(dirs: Sequence[Path]) -> str:
    return ", ".join(str(d) for d in dirs)


def _cuda(environ: Mapping[str, str], host_os: str) -> Toolchain:
    if host_os == "darwin":
        raise RuntimeInstallError(
            "cannot build the cuda backend on macOS (NVIDIA's CUDA toolkit does not support "
            "it); use --backend metal"
        )
    bins = [home / "bin" for home in _homes(environ, ("CUDA_HOME", "CUDA_PATH"), CUDA_HOMES)]
    nvcc = _which("nvcc", environ, bins)
    if nvcc is None:
        raise RuntimeInstallError(
            "cannot build the cuda backend: nvcc (the CUDA compiler) is not on PATH nor in "
            f"{_shown(bins)}; {CUDA_HINT}"
        )
    return Toolchain(
        "cuda", ("-DGGML_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={nvcc}"), (), f"nvcc {nvcc}"
    )


def _rocm(environ: Mapping[str, str], host_os: str) -> Toolchain:
    if host_os != "linux":
        raise RuntimeInstallError(
            f"cannot build the rocm backend on {host_os}: llamasup builds it on Linux only"
        )
    bins = [home / "bin" for home in _homes(environ, ("ROCM_PATH", "HIP_PATH"), ROCM_HOMES)]
    hipcc = _which("hipcc", environ, bins)
    if hipcc is None:
        raise RuntimeInstallError(
            "cannot build the rocm backend: hipcc (the HIP compiler) is not on PATH nor in "
            f"{_shown(bins)}; {ROCM_HINT}"
        )
    # hipconfig from the same ROCm as hipcc, so that compiler and libraries match
    hipconfig = shutil.which("hipconfig", path=str(Path(hipcc).parent)) or _which(
        "hipconfig", environ
    )
    clang_dir = _output([hipconfig, "-l"], environ) if hipconfig else None
    rocm_path = _output([hipconfig, "-R"], environ) if hipconfig else None
    if hipconfig is None or clang_dir is None or rocm_path is None:
        raise RuntimeInstallError(
            f"cannot build the rocm backend: hipcc is at {hipcc}, but `hipconfig -l` and "
            "`hipconfig -R` (its clang directory and ROCm root) do not answer; "
            f"{ROCM_HINT}"
        )
    clang = Path(clang_dir) / "clang"
    if not (clang.is_file() and os.access(clang, os.X_OK)):
        raise RuntimeInstallError(
            f"cannot build the rocm backend: `hipconfig -l` names {clang_dir}, which holds no "
            f"clang; {ROCM_HINT}"
        )
    return Toolchain(
        "rocm",
        ("-DGGML_HIP=ON", f"-DCMAKE_HIP_COMPILER={clang}"),
        (("HIP_PATH", rocm_path), ("ROCM_PATH", rocm_path)),
        f"hipcc {hipcc} (ROCm {rocm_path})",
    )


def _vulkan(environ: Mapping[str, str], host_os: str) -> Toolchain:
    sdk = Path(environ["VULKAN_SDK"]) if environ.get("VULKAN_SDK") else None
    glslc = _which("glslc", environ, [sdk / "bin"] if sdk else [])
    includes = ([sdk / "include"] if sdk else []) + list(INCLUDE_DIRS)
    missing = [] if glslc else ["glslc (the GLSL to SPIR-V compiler)"]
    # ggml-vulkan includes vulkan.hpp and needs SPIRV-Headers (ggml-vulkan/CMakeLists.txt)
    for header, what in (
        ("vulkan/vulkan.hpp", "the Vulkan headers"),
        ("spirv/unified1/spirv.hpp", "the SPIR-V headers"),
    ):
        if not any((directory / header).is_file() for directory in includes):
            missing.append(f"{what} ({header} in {_shown(includes)})")
    if missing or glslc is None:
        raise RuntimeInstallError(
            f"cannot build the vulkan backend: missing {', '.join(missing)}; {VULKAN_HINT}"
        )
    options: tuple[str, ...] = ("-DGGML_VULKAN=ON", f"-DVulkan_GLSLC_EXECUTABLE={glslc}")
    if host_os == "darwin":
        options += _NO_METAL
    return Toolchain("vulkan", options, (), f"glslc {glslc}")


def _metal(environ: Mapping[str, str], host_os: str) -> Toolchain:
    if host_os != "darwin":
        raise RuntimeInstallError(
            f"cannot build the metal backend on {host_os}: Metal is Apple's, it builds on macOS"
        )
    xcrun = _which("xcrun", environ, [Path("/usr/bin")])
    sdk = _output([xcrun, "--sdk", "macosx", "--show-sdk-path"], environ) if xcrun else None
    if sdk is None:
        raise RuntimeInstallError(
            "cannot build the metal backend: no macOS SDK (`xcrun --sdk macosx "
            f"--show-sdk-path` fails); {METAL_HINT}"
        )
    # the shaders are embedded in the binary, so it runs from anywhere without a .metallib
    options = ("-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON")
    return Toolchain("metal", options, (), f"macOS SDK {sdk}")


def find_toolchain(
    backend: Backend, environ: Mapping[str, str], *, host_os: str = sys.platform
) -> Toolchain:
    """The toolchain for ``backend`` on this host, or RuntimeInstallError naming what is
    missing (checked before anything is downloaded). cmake, ninja and the C/C++ compilers are
    :func:`llamasup.runtime.sdist_build.find_build_tools`'s business."""
    if backend == "cuda":
        return _cuda(environ, host_os)
    if backend == "rocm":
        return _rocm(environ, host_os)
    if backend == "vulkan":
        return _vulkan(environ, host_os)
    if backend == "metal":
        return _metal(environ, host_os)
    return Toolchain("cpu", _NO_METAL if host_os == "darwin" else (), (), "")


# -- what GPUs the host shows -------------------------------------------------------------------


@dataclass(frozen=True)
class GpuProbe:
    """What one vendor's reporting tool says: where it is and how many GPUs it lists."""

    backend: Backend
    tool: str
    path: str | None
    gpus: int

    def describe(self) -> str:
        if self.path is None:
            return f"{self.tool}: not on PATH"
        if self.gpus == 0:
            return f"{self.tool}: no GPU listed"
        return f"{self.tool}: {self.gpus} GPU(s)"


_VULKAN_GPU = re.compile(r"PHYSICAL_DEVICE_TYPE_(?:DISCRETE|INTEGRATED|VIRTUAL)_GPU")
_ROCM_GPU = re.compile(r"^GPU\[(\d+)\]", re.MULTILINE)
#: (backend, the tool that lists its GPUs, the tool's arguments)
_PROBES: tuple[tuple[Backend, str, tuple[str, ...]], ...] = (
    ("cuda", "nvidia-smi", ("-L",)),  # "GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-...)"
    ("rocm", "rocm-smi", ("--showproductname",)),  # "GPU[0] : Card Series: ..."
    # "deviceType = PHYSICAL_DEVICE_TYPE_DISCRETE_GPU"; llvmpipe (a CPU) does not count
    ("vulkan", "vulkaninfo", ("--summary",)),
)


def _count_gpus(backend: Backend, text: str) -> int:
    if backend == "cuda":
        return sum(line.startswith("GPU ") for line in text.splitlines())
    if backend == "rocm":
        return len(set(_ROCM_GPU.findall(text)))
    return len(_VULKAN_GPU.findall(text))


def probe_gpus(environ: Mapping[str, str]) -> list[GpuProbe]:
    """Ask nvidia-smi, rocm-smi and vulkaninfo (those on PATH) which GPUs they see."""
    probes = []
    for backend, tool, arguments in _PROBES:
        path = _which(tool, environ)
        text = _output([path, *arguments], environ) if path else None
        probes.append(GpuProbe(backend, tool, path, _count_gpus(backend, text or "")))
    return probes


@dataclass(frozen=True)
class AutoChoice:
    backend: Backend
    reason: str


_VENDOR = {"cuda": "an NVIDIA GPU", "rocm": "an AMD GPU", "vulkan": "a Vulkan GPU"}


def choose_backend(
    environ: Mapping[str, str],
    *,
    host_os: str = sys.platform,
    machine: str | None = None,
    probes: Sequence[GpuProbe] | None = None,
) -> AutoChoice:
    """``--backend auto``: the first of cuda, rocm, metal (macOS on arm64), vulkan whose GPU
    the host shows and whose toolchain is here; else cpu, saying what was missing."""
    arch = (machine or platform.machine()).lower()
    seen = {probe.backend: probe for probe in (probe_gpus(environ) if probes is None else probes)}
    notes: list[str] = []

    def attempt(backend: Backend) -> AutoChoice | None:
        probe = seen[backend]
        try:
            toolchain = find_toolchain(backend, environ, host_os=host_os)
        except RuntimeInstallError as exc:
            if probe.gpus:
                notes.append(f"{_VENDOR[backend]} ({probe.describe()}), but {exc}")
            return None
        if probe.gpus:
            return AutoChoice(backend, f"{probe.describe()}; {toolchain.found}")
        notes.append(
            f"{toolchain.found} is here, but no GPU was seen ({probe.describe()}); "
            f"`--backend {backend}` builds it anyway"
        )
        return None

    for backend in ("cuda", "rocm"):
        choice = attempt(backend)
        if choice is not None:
            return choice
    if host_os == "darwin" and arch in ("arm64", "aarch64"):
        return AutoChoice("metal", "macOS on Apple silicon")
    choice = attempt("vulkan")
    if choice is not None:
        return choice
    shown = ", ".join(probe.describe() for probe in seen.values())
    return AutoChoice("cpu", "; ".join([f"no GPU with its build toolchain ({shown})", *notes]))
