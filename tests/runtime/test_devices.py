"""``--list-devices`` parsing on recorded and format-derived outputs, and running a binary.

See tests/fixtures/list-devices/README.md for where each output comes from.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llamasup.runtime.devices import Device, list_devices, parse_list_devices

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "list-devices"
MIB = 1 << 20


def _fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_a_cpu_only_build_lists_none() -> None:
    assert parse_list_devices(_fixture("cpu-b11434.txt")) == []


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "cuda-one.txt",
            [Device("CUDA0", "NVIDIA GeForce RTX 4090", 24080 * MIB, 23557 * MIB)],
        ),
        (
            "cuda-two.txt",
            [
                Device("CUDA0", "NVIDIA GeForce RTX 3090", 24135 * MIB, 23755 * MIB),
                Device("CUDA1", "NVIDIA GeForce RTX 3090", 24135 * MIB, 1024 * MIB),
            ],
        ),
        (
            "rocm-one.txt",
            [Device("ROCm0", "AMD Radeon RX 7900 XTX", 24560 * MIB, 24492 * MIB)],
        ),
        (
            "vulkan-two.txt",
            [
                Device("Vulkan0", "AMD Radeon RX 7900 XTX (RADV NAVI31)", 24560 * MIB, 23880 * MIB),
                Device("Vulkan1", "Intel(R) Graphics (RPL-S)", 15863 * MIB, 15863 * MIB),
            ],
        ),
        (
            "metal-blas.txt",
            [
                Device("MTL0", "Apple M2 Max", 49152 * MIB, 49151 * MIB),
                Device("BLAS", "Accelerate", 0, 0),
            ],
        ),
    ],
)
def test_device_lines_are_read_with_sizes_in_bytes(fixture: str, expected: list[Device]) -> None:
    assert parse_list_devices(_fixture(fixture)) == expected


def test_a_blas_library_is_listed_but_takes_no_layers() -> None:
    gpu, blas = parse_list_devices(_fixture("metal-blas.txt"))
    assert gpu.offloads and not blas.offloads


def test_rpc_devices_and_odd_lines() -> None:
    text = (
        "some log line before\n"
        "Available devices:\n"
        "  RPC0: 192.168.1.7:50052 (16000 MiB, 15000 MiB free)\n"
        "  a line from a future build\n"
        "  Vulkan0:  (0 MiB, 0 MiB free)\n"
    )
    assert parse_list_devices(text) == [
        Device("RPC0", "192.168.1.7:50052", 16000 * MIB, 15000 * MIB),
        Device("Vulkan0", "", 0, 0),
    ]


def test_text_without_the_header_is_not_a_device_list() -> None:
    with pytest.raises(ValueError, match="Available devices:"):
        parse_list_devices("error: invalid argument: --list-devices\n")


def test_list_devices_runs_the_binary_and_reads_stdout_only(tmp_path: Path) -> None:
    stdout, stderr = FIXTURES / "cuda-one.txt", FIXTURES / "cuda-one.stderr.txt"
    binary = _script(
        tmp_path / "llama-server",
        f'[ "$1" = --list-devices ] || exit 9\ncat {stderr} >&2\ncat {stdout}',
    )
    assert list_devices(binary) == parse_list_devices(stdout.read_text())


def test_list_devices_passes_the_environment(tmp_path: Path) -> None:
    binary = _script(
        tmp_path / "llama-server",
        'echo "Available devices:"\n'
        'echo "  CUDA$CUDA_VISIBLE_DEVICES: GPU ($CUDA_VISIBLE_DEVICES MiB, 1 MiB free)"',
    )
    (device,) = list_devices(binary, env={"CUDA_VISIBLE_DEVICES": "3"}) or []
    assert (device.name, device.total) == ("CUDA3", 3 * MIB)


def test_list_devices_never_raises(tmp_path: Path) -> None:
    assert list_devices(tmp_path / "missing") is None
    assert list_devices(_script(tmp_path / "fails", "echo 'Available devices:'; exit 1")) is None
    assert list_devices(_script(tmp_path / "old", "echo 'error: invalid argument'")) is None
    not_executable = tmp_path / "plain"
    not_executable.write_text("")
    assert list_devices(not_executable) is None
    hangs = _script(tmp_path / "hangs", "exec sleep 30")
    assert list_devices(hangs, timeout=0.3) is None


@pytest.mark.e2e
def test_the_real_binary_answers_in_the_parsed_format(llama_server_bin: Path) -> None:
    # the CPU build here prints "(none)"; a GPU build someone put on PATH lists its devices
    devices = list_devices(llama_server_bin)
    assert devices is not None
    assert all(device.name and device.total >= device.free >= 0 for device in devices)
