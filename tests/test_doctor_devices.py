"""``llamasup doctor``'s device checks: the binary's devices, GPU offload it cannot do, the
host's GPU tools, and memory budgets against free device memory.

No GPU here: the binaries are small shell scripts and the fake llama-server printing recorded
``--list-devices`` outputs (tests/fixtures/list-devices, provenance in its README).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from profile_helpers import load, write

from llamasup.cli.main import main
from llamasup.doctor import (
    CheckResult,
    budgets_from_profile,
    check_binaries,
    check_devices,
    check_gpu_tools,
    check_memory_budget,
    check_offload,
    device_budget_checks,
    plain_budget_check,
    run_checks,
)
from llamasup.doctor.devices import host_memory, offload_request, offload_requests
from llamasup.runtime import toolchains
from llamasup.runtime.devices import Device, parse_list_devices
from llamasup.runtime.toolchains import AutoChoice, GpuProbe
from llamasup.testing import write_fake_binary
from llamasup.testing.process import free_port

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "list-devices"
MIB, GIB = 1 << 20, 1 << 30
CPU_ONLY: list[Device] = []
CUDA_TWO = parse_list_devices((FIXTURES / "cuda-two.txt").read_text())
METAL = parse_list_devices((FIXTURES / "metal-blas.txt").read_text())
HOST = Device("host", "system memory", 64 * GIB, 40 * GIB)
CPU_AUTO = AutoChoice("cpu", "no GPU with its build toolchain")


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def _by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {result.check: result for result in results}


# -- what the binary lists ---------------------------------------------------------------------


def test_a_cpu_only_build_is_ok_and_says_so() -> None:
    result = check_devices(Path("/b/llama-server"), CPU_ONLY, "GNU 12.2.0 for Linux x86_64")
    assert (result.check, result.status) == ("devices", "ok")
    assert result.detail == "none: a CPU-only build (built with GNU 12.2.0 for Linux x86_64)"


def test_gpus_are_listed_with_their_free_memory() -> None:
    result = check_devices(Path("/b/llama-server"), CUDA_TWO, None)
    assert result.status == "ok"
    assert result.detail == (
        "CUDA0: NVIDIA GeForce RTX 3090, 23.2 GiB free of 23.6 GiB; "
        "CUDA1: NVIDIA GeForce RTX 3090, 1.0 GiB free of 23.6 GiB"
    )
    metal = check_devices(Path("/b/llama-server"), METAL, None)
    assert metal.detail.startswith("MTL0: Apple M2 Max")
    assert metal.detail.endswith("; also BLAS, which hold no layers")


def test_a_binary_that_cannot_list_devices_is_a_warning() -> None:
    result = check_devices(Path("/b/llama-server"), None, None)
    assert result.status == "warn"
    assert "--list-devices` fails" in result.detail and "not checked" in result.detail


# -- what the profile asks for -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "asked"),
    [
        (["--n-gpu-layers", "99"], {}, {"--n-gpu-layers": "99"}),
        (["--n-gpu-layers", "all"], {}, {"--n-gpu-layers": "all"}),
        (["--n-gpu-layers=12"], {}, {"--n-gpu-layers": "12"}),
        (["--n-gpu-layers", "0"], {}, {}),
        (["--n-gpu-layers", "auto"], {}, {}),  # the default: as many as the devices take
        (["--device", "CUDA0,CUDA1"], {}, {"--device": "CUDA0,CUDA1"}),
        (["--device", "none"], {}, {}),
        (["--tensor-split", "3,1"], {}, {"--tensor-split": "3,1"}),
        (["--main-gpu", "0"], {}, {"--main-gpu": "0"}),
        (["--ctx-size", "4096", "--temp", "0"], {}, {}),
        ([], {"LLAMA_ARG_N_GPU_LAYERS": "20"}, {"--n-gpu-layers": "20"}),
        ([], {"LLAMA_ARG_DEVICE": "Vulkan0"}, {"--device": "Vulkan0"}),
    ],
)
def test_offload_request(args: list[str], env: dict[str, str], asked: dict[str, str]) -> None:
    assert offload_request(args, env) == asked


def test_offload_requests_read_models_and_the_agents_that_change_them(tmp_path: Path) -> None:
    profile = write(
        tmp_path / "p.yaml",
        """
        models:
          big: {path: /m/big.gguf, args: [-ngl, 99]}
          small: {path: /m/small.gguf, args: [-ngl, 0]}
          plain: {path: /m/plain.gguf}
        agents:
          split: {flags: "--tensor-split 3,1"}
          cool: {flags: --temp 0.2}
        """,
    )
    requests = offload_requests(load(profile), ["big", "small", "plain"])
    assert requests == {
        "big": {"--n-gpu-layers": "99"},
        "big@split": {"--n-gpu-layers": "99", "--tensor-split": "3,1"},
        "small@split": {"--tensor-split": "3,1"},
        "plain@split": {"--tensor-split": "3,1"},
    }


def test_offload_a_cpu_only_build_cannot_do_fails_with_both_fixes() -> None:
    requests = {"big": {"--n-gpu-layers": "99"}, "vl": {"--device": "CUDA0"}}
    result = check_offload(
        Path("/c/llama-server"), CPU_ONLY, requests, source="cache", auto=CPU_AUTO
    )
    assert (result.check, result.status) == ("gpu offload", "FAIL")
    assert "/c/llama-server lists no GPU (a CPU-only build)" in result.detail
    assert "big: --n-gpu-layers 99; vl: --device CUDA0" in result.detail
    assert "`llamasup runtime install --backend cuda` (or rocm, vulkan, metal" in result.fix
    assert "set -ngl 0" in result.fix
    assert "server.binary" not in result.fix  # the cache fallback prefers a GPU build anyway


def test_the_fix_names_the_backend_auto_would_build_and_where_to_point() -> None:
    auto = AutoChoice("rocm", "rocm-smi: 1 GPU(s); hipcc /opt/rocm/bin/hipcc")
    requests = {"big": {"--n-gpu-layers": "99"}}
    result = check_offload(
        Path("/usr/bin/llama-server"), METAL[1:], requests, source="PATH", auto=auto
    )
    assert result.status == "FAIL"  # a BLAS device takes no layers
    assert "`llamasup runtime install --backend rocm`, then point server.binary" in result.fix
    assert "since this one comes from PATH" in result.fix


def test_offload_to_listed_devices_is_ok_and_an_unlisted_device_fails() -> None:
    binary = Path("/g/llama-server")
    fine = check_offload(
        binary,
        CUDA_TWO,
        {"big": {"--device": "CUDA0,CUDA1"}, "x": {"--n-gpu-layers": "all"}},
        source="cache",
    )
    assert (fine.status, fine.detail) == ("ok", "2 sidecar(s) offload to CUDA0, CUDA1")
    wrong = check_offload(binary, CUDA_TWO, {"big": {"--device": "CUDA0,CUDA2"}}, source="cache")
    assert wrong.status == "FAIL"
    assert "(big: CUDA2)" in wrong.detail and "`invalid device`" in wrong.detail
    assert wrong.fix.startswith("use a device it lists: CUDA0, CUDA1")
    nothing = check_offload(binary, CPU_ONLY, {}, source="cache")
    assert (nothing.status, nothing.detail) == ("ok", "no model asks for GPU offload")


# -- the host's GPU tools ----------------------------------------------------------------------


def test_gpu_tools_are_reported_never_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(toolchains, "CUDA_HOMES", ())
    monkeypatch.setattr(toolchains, "ROCM_HOMES", ())
    monkeypatch.setattr(toolchains, "INCLUDE_DIRS", ())
    nvcc = _script(tmp_path / "bin" / "nvcc", "exit 0")
    probes = [
        GpuProbe("cuda", "nvidia-smi", None, 0),
        GpuProbe("rocm", "rocm-smi", None, 0),
        GpuProbe("vulkan", "vulkaninfo", "/usr/bin/vulkaninfo", 0),
    ]
    result = check_gpu_tools({"PATH": str(nvcc.parent)}, probes, CPU_AUTO, host_os="linux")
    assert (result.check, result.status) == ("gpu tools", "ok")
    assert result.detail == (
        "nvidia-smi: not on PATH, rocm-smi: not on PATH, vulkaninfo: no GPU listed; "
        f"toolkits: cuda: nvcc {nvcc}, rocm: none, vulkan: none; "
        "`llamasup runtime install --backend auto` would build cpu"
    )


# -- memory budgets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (None, (None, {})),
        (8 * GIB, (8 * GIB, {})),
        ("20GiB", (20 * GIB, {})),
        (
            {"CUDA0": "22GiB", "host": 48 * GIB, "bad": "lots"},
            (None, {"CUDA0": 22 * GIB, "host": 48 * GIB}),
        ),
        (["a", "list"], (None, {})),
        (True, (None, {})),
        ("nonsense", (None, {})),
    ],
)
def test_budgets_are_read_from_whatever_form_the_profile_holds(
    raw: object, parsed: tuple[int | None, dict[str, int]]
) -> None:
    assert budgets_from_profile(raw) == parsed


def test_each_device_budget_against_that_devices_free_memory() -> None:
    budgets = {"CUDA0": 20 * GIB, "CUDA1": 2 * GIB, "CUDA7": GIB, "host": 48 * GIB}
    results = _by_check(device_budget_checks(CUDA_TWO, budgets, host=HOST))
    cuda0, cuda1, cuda7, host = (results[f"memory budget {n}"] for n in budgets)
    assert (cuda0.status, cuda0.detail) == (
        "ok",
        "20.0 GiB within CUDA0's 23.2 GiB free of 23.6 GiB",
    )
    assert cuda1.status == "warn"
    assert cuda1.detail.startswith("2.0 GiB is more than CUDA1's 1.0 GiB free of 23.6 GiB")
    assert cuda1.fix == "lower server.memory_budget.CUDA1, or free memory on CUDA1"
    assert cuda7.status == "FAIL"
    assert "names CUDA7, which no llama-server here lists (devices: CUDA0, CUDA1)" in cuda7.detail
    assert host.status == "warn"
    assert "is more than host's 40.0 GiB free of 64.0 GiB (system memory)" in host.detail


def test_a_host_budget_without_host_memory_is_not_compared() -> None:
    (result,) = device_budget_checks(CUDA_TWO, {"host": GIB})
    assert (result.status, result.detail) == ("ok", "system memory unknown here: not compared")


def test_a_plain_budget_is_compared_with_the_gpus_together_or_the_host() -> None:
    over = plain_budget_check(30 * GIB, CUDA_TWO, host=HOST)
    assert over.status == "warn"
    assert over.detail == (
        "30.0 GiB is more than the 24.2 GiB free on CUDA0, CUDA1: what fits the budget may not fit"
    )
    assert over.fix == (
        "lower server.memory_budget, or give each device its own budget "
        "({CUDA0: ..., CUDA1: ..., host: ...})"
    )
    assert plain_budget_check(20 * GIB, CUDA_TWO, host=HOST).status == "ok"
    cpu = plain_budget_check(48 * GIB, CPU_ONLY, host=HOST)
    assert cpu.status == "warn" and "the 40.0 GiB of system memory available" in cpu.detail
    assert plain_budget_check(8 * GIB, CPU_ONLY, host=HOST).status == "ok"
    unknown = plain_budget_check(8 * GIB, CPU_ONLY, host=None)
    assert (unknown.status, unknown.detail) == ("ok", "8.0 GiB; free memory unknown here")


def test_memory_budget_dispatches_on_its_form() -> None:
    assert check_memory_budget(None, CUDA_TWO, host=HOST) == []
    (plain,) = check_memory_budget("8GiB", CUDA_TWO, host=HOST)
    assert plain.check == "memory budget"
    per_device = check_memory_budget({"CUDA0": "8GiB"}, CUDA_TWO, host=HOST)
    assert [r.check for r in per_device] == ["memory budget CUDA0"]
    (unlisted,) = check_memory_budget({"CUDA0": "8GiB"}, None, host=HOST)
    assert unlisted.status == "warn" and "no llama-server here listed" in unlisted.detail


def test_host_memory_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24562880 kB\nMemFree: 1 kB\nMemAvailable:   23808012 kB\n")
    assert host_memory(meminfo) == Device("host", "system memory", 24562880 * 1024, 23808012 * 1024)
    assert host_memory(tmp_path / "absent") is None
    meminfo.write_text("MemTotal: 1 kB\n")
    assert host_memory(meminfo) is None


# -- through run_checks and the command, with fake binaries -----------------------------------


def _gpu_script(path: Path, listing: Path) -> Path:
    """A llama-server stand-in: --version like b11434, --list-devices from a fixture."""
    return _script(
        path,
        'case "$1" in\n'
        "  --version) echo 'version: 0.6.0-dev (build 11434, commit pypi-sdist)' >&2\n"
        "             echo 'built with GNU 12.2.0 for Linux x86_64' >&2 ;;\n"
        f"  --list-devices) cat {listing} ;;\n"
        "  *) exit 1 ;;\n"
        "esac",
    )


def _profile(tmp_path: Path, binary: Path, *, model_args: str, extra: str = "") -> Path:
    port = free_port()
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    return write(
        tmp_path / "profiles" / "host.yaml",
        f"""
        server:
          listen: 127.0.0.1:{free_port()}
          binary: {binary}
          ports: {port}-{port}
          state_dir: {tmp_path / "state"}
        {extra}
        models:
          m: {{path: {model}, args: {model_args}}}
        """,
    )


def test_doctor_fails_gpu_offload_on_the_cpu_build_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cpu = write_fake_binary(tmp_path / "bin")  # prints "(none)" like the real CPU build
    path = _profile(tmp_path, cpu, model_args="[-ngl, 99]")
    assert main(["doctor", str(path)]) == 1
    out = capsys.readouterr().out
    assert "ok    devices: none: a CPU-only build (built with python for fake llama-server)" in out
    assert (
        f"FAIL  gpu offload: {cpu} lists no GPU (a CPU-only build), but these ask for GPU " in out
    )
    assert "m: --n-gpu-layers 99" in out
    assert "      fix: build a GPU backend: `llamasup runtime install --backend" in out
    assert "then point server.binary (or LLAMA_SERVER_BIN) at the path it prints" in out
    assert "ok    gpu tools: " in out


def test_doctor_on_a_gpu_build_checks_offload_and_a_plain_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = _gpu_script(tmp_path / "bin" / "llama-server", FIXTURES / "cuda-two.txt")
    path = _profile(
        tmp_path,
        binary,
        model_args="[-ngl, 99, --device, CUDA0]",
        extra="  memory_budget: 30GiB",
    )
    assert main(["doctor", str(path), "-o", "json"]) == 0  # warnings only
    report = {item["check"]: item for item in json.loads(capsys.readouterr().out)}
    assert report["devices"]["detail"].startswith("CUDA0: NVIDIA GeForce RTX 3090, 23.2 GiB free")
    assert report["devices"]["detail"].endswith("(built with GNU 12.2.0 for Linux x86_64)")
    assert report["gpu offload"]["status"] == "ok"
    assert report["gpu offload"]["detail"] == "1 sidecar(s) offload to CUDA0, CUDA1"
    assert report["memory budget"]["status"] == "warn"
    assert "more than the 24.2 GiB free on CUDA0, CUDA1" in report["memory budget"]["detail"]


def test_the_device_listing_sees_the_profiles_environment(tmp_path: Path) -> None:
    binary = _script(
        tmp_path / "bin" / "llama-server",
        'case "$1" in\n'
        "  --version) echo 'version: 1 (build 11434, commit x)' >&2 ;;\n"
        "  --list-devices) echo 'Available devices:'\n"
        '    echo "  CUDA0: only GPU $CUDA_VISIBLE_DEVICES (100 MiB, 50 MiB free)" ;;\n'
        "esac",
    )
    path = _profile(tmp_path, binary, model_args="[]", extra="  env: {CUDA_VISIBLE_DEVICES: '3'}")
    results = {r.check: r for r in check_binaries(load(path), {"CUDA_VISIBLE_DEVICES": "0,1"})}
    assert results["devices"].detail.startswith("CUDA0: only GPU 3,")


def test_a_model_binary_of_its_own_gets_its_own_device_checks(tmp_path: Path) -> None:
    cpu = write_fake_binary(tmp_path / "cpu")
    gpu = _gpu_script(tmp_path / "gpu" / "llama-server", FIXTURES / "cuda-one.txt")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF\x03\x00\x00\x00")
    path = write(
        tmp_path / "p.yaml",
        f"""
        server: {{binary: {cpu}, state_dir: {tmp_path / "state"}}}
        models:
          a: {{path: {model}}}
          b: {{path: {model}, binary: {gpu}, args: [-ngl, all]}}
        """,
    )
    results = {r.check: r for r in run_checks(path, {}, system_config=tmp_path / "x.ini")}
    assert results["devices"].detail.startswith("none: a CPU-only build")
    assert "gpu offload" in results  # the server binary: model a asks for nothing
    assert results["gpu offload"].status == "ok"
    assert results["devices for b"].detail.startswith("CUDA0: NVIDIA GeForce RTX 4090")
    assert results["gpu offload for b"].status == "ok"


def test_doctor_checks_a_per_device_budget_from_the_profile_device_by_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = _gpu_script(tmp_path / "bin" / "llama-server", FIXTURES / "cuda-two.txt")
    path = _profile(
        tmp_path,
        binary,
        model_args="[-ngl, 99]",
        extra="  memory_budget: {CUDA0: 20GiB, CUDA1: 8GiB, CUDA7: 1GiB}",
    )
    assert main(["doctor", str(path), "-o", "json"]) == 1  # CUDA7 is listed by no binary
    report = {item["check"]: item for item in json.loads(capsys.readouterr().out)}
    assert report["memory budget CUDA0"]["status"] == "ok"
    assert report["memory budget CUDA0"]["detail"].startswith("20.0 GiB within CUDA0's")
    assert report["memory budget CUDA1"]["status"] == "warn"
    assert report["memory budget CUDA7"]["status"] == "FAIL"
    assert "server.memory_budget names CUDA7" in report["memory budget CUDA7"]["detail"]
    assert "memory budget" not in report  # no plain-size check beside the per-device ones
