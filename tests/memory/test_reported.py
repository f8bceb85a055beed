"""The buffers llama-server reports at load (``-lv 4``), and the estimate's error against them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from llamasup.memory.cache import MemoryEstimates
from llamasup.memory.estimate import MemoryEstimate
from llamasup.memory.reported import (
    ReportedMemory,
    buffer_device,
    describe_error,
    estimate_error,
    reported_memory,
)
from llamasup.profiles.load import load_profiles
from llamasup.spec.resolve import Resolver

MIB = 1 << 20
FIXTURE = Path(__file__).parent.parent / "fixtures" / "load-output" / "gemma3-270m-lv4.txt"


def test_a_real_cpu_load_sums_both_kv_caches_of_a_sliding_window_model() -> None:
    # b11434 with gemma3-270m, -c 4096 -np 2 -lv 4: the output as printed (see the fixture)
    found = reported_memory(FIXTURE.read_text().splitlines())
    assert found is not None
    sizes = (235.16, 12.66, 2.00, 12.00, 30.00, 21.28)
    assert found.devices == {"host": sum(round(size * MIB) for size in sizes)}
    assert found.parts == {
        "weights": round(235.16 * MIB) + round(12.66 * MIB),
        "compute": round(2.00 * MIB) + round(21.28 * MIB),  # output + compute buffers
        "kv_cache": round(12.00 * MIB) + round(30.00 * MIB),  # non-SWA + SWA caches
    }


def test_gpu_buffers_go_to_their_device_and_pinned_host_buffers_to_the_host() -> None:
    lines = [
        "load_tensors: offloaded 33/33 layers to GPU",
        "load_tensors:        CUDA0 model buffer size =  3992.51 MiB",
        "load_tensors:        CUDA1 model buffer size =  1024.00 MiB",
        "load_tensors:   CPU_Mapped model buffer size =   281.81 MiB",
        "\x1b[34m1.14.608.918\x1b[0m \x1b[32mI \x1b[0mllama_context:  CUDA_Host  output buffer size"
        " =     0.49 MiB",
        "llama_kv_cache:      CUDA0 KV buffer size =   182.75 MiB",
        "llama_memory_recurrent:        CPU RS buffer size =     1.25 MiB",
        "sched_reserve:      CUDA0 compute buffer size =   560.00 MiB",
        "sched_reserve:  CUDA_Host compute buffer size =    24.01 MiB",
        "llama_kv_cache: size =  182.75 MiB (  4352 cells,  43 layers)",  # a summary: not a buffer
    ]
    found = reported_memory(lines)
    assert found is not None
    assert found.devices == {
        "CUDA0": round(3992.51 * MIB) + round(182.75 * MIB) + round(560.00 * MIB),
        "CUDA1": 1024 * MIB,
        "host": round(281.81 * MIB) + round(0.49 * MIB) + round(1.25 * MIB) + round(24.01 * MIB),
    }
    assert found.parts["kv_cache"] == round(182.75 * MIB) + round(1.25 * MIB)  # KV + RS


def test_output_without_buffer_lines_reports_nothing() -> None:
    # llama-server's default verbosity (3) prints no buffer sizes
    assert reported_memory(["srv  llama_server: listening on http://127.0.0.1:1"]) is None


@pytest.mark.parametrize(
    ("name", "device"),
    [("CPU", "host"), ("CPU_Mapped", "host"), ("CPU_REPACK", "host"), ("CUDA_Host", "host"),
     ("CUDA0", "CUDA0"), ("Vulkan1", "Vulkan1"), ("ROCm0", "ROCm0")],
)  # fmt: skip
def test_buffer_types_name_their_device(name: str, device: str) -> None:
    assert buffer_device(name) == device


def test_the_error_is_the_estimates_relative_to_the_report() -> None:
    assert estimate_error(110, 100) == pytest.approx(0.10)
    assert estimate_error(90, 100) == pytest.approx(-0.10)
    assert estimate_error(5, 0) is None
    reported = ReportedMemory(
        {"host": 100 * MIB, "CUDA0": 300 * MIB},
        {"weights": 300 * MIB, "kv_cache": 60 * MIB, "compute": 40 * MIB},
    )
    line = describe_error(
        reported,
        440 * MIB,
        {"weights": 330 * MIB, "kv_cache": 60 * MIB, "compute": 50 * MIB},
        {"host": 110 * MIB, "CUDA0": 330 * MIB},
    )
    assert line.startswith("llama-server reported 400.0 MiB of buffers, estimated 440.0 MiB (+10%)")
    assert "weights 300.0 MiB vs 330.0 MiB (+10%)" in line
    assert "kv_cache 60.0 MiB vs 60.0 MiB (+0%)" in line
    assert "compute 40.0 MiB vs 50.0 MiB (+25%)" in line
    assert "CUDA0 300.0 MiB vs 330.0 MiB (+10%)" in line and "host 100.0 MiB vs 110.0 MiB" in line


def test_the_cache_logs_the_estimates_error_for_a_spec(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    path = tmp_path / "p.yaml"
    path.write_text(f"models:\n  m: {{path: {model}}}\n")
    spec = Resolver(load_profiles(path)).resolve("m").spec
    estimate = MemoryEstimate(
        weights=240 * MIB, kv_cache=42 * MIB, overhead=30 * MIB, total=312 * MIB,
        n_ctx=4096, n_seq=2, compute=20 * MIB, n_layer=18,
    )  # fmt: skip
    cache = MemoryEstimates(estimator=lambda _spec: estimate)
    cache.request(spec, on_ready=lambda: None)  # no running loop: computed at once
    with caplog.at_level(logging.INFO, logger="llamasup.memory.cache"):
        found = cache.compare(spec, FIXTURE.read_text().splitlines(), (), {})
    assert found is not None and found.total > 0
    assert "m: memory at load: llama-server reported 313.1 MiB of buffers, estimated 302.0 MiB" in (
        caplog.text
    )
    assert "weights 247.8 MiB vs 240.0 MiB (-3%)" in caplog.text
