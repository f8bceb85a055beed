"""Splitting a memory estimate between the host and GPUs by the load flags."""

from __future__ import annotations

import pytest

from llamasup.flags.flagset import FlagSet, parse
from llamasup.flags.vocabulary import Layer
from llamasup.memory.estimate import MemoryEstimate
from llamasup.memory.split import Footprint, split_estimate

MIB = 1 << 20
# 10 layers: 1000 MiB of weights, 200 MiB of KV cache, 150 MiB overhead of which 100 compute
ESTIMATE = MemoryEstimate(
    weights=1000 * MIB,
    kv_cache=200 * MIB,
    overhead=150 * MIB,
    total=1350 * MIB,
    n_ctx=4096,
    n_seq=1,
    compute=100 * MIB,
    n_layer=10,
)


def _split(*args: str, gpus: tuple[str, ...] = ("CUDA0",)) -> dict[str, int]:
    return split_estimate(ESTIMATE, parse(args, Layer.MODEL).raise_first(), gpus)


def _mib(split: dict[str, int]) -> dict[str, int]:
    return {device: round(size / MIB) for device, size in split.items()}


def test_without_gpus_everything_is_host_memory() -> None:
    assert _split(gpus=()) == {"host": ESTIMATE.total}
    assert _split("--device", "none") == {"host": ESTIMATE.total}
    assert _split("-ngl", "0") == {"host": ESTIMATE.total}


def test_a_full_offload_puts_weights_kv_and_compute_on_the_gpu() -> None:
    # llama-server's default -ngl is auto: everything goes
    assert _mib(_split()) == {"CUDA0": 1300, "host": 50}
    assert _mib(_split("-ngl", "all")) == {"CUDA0": 1300, "host": 50}
    assert _mib(_split("-ngl", "99")) == {"CUDA0": 1300, "host": 50}


def test_a_partial_offload_splits_by_layers() -> None:
    # 4 of 10 layers: 40% of weights and KV on the GPU, compute on the GPU
    assert _mib(_split("-ngl", "4")) == {"CUDA0": 400 + 80 + 100, "host": 600 + 120 + 50}


def test_kv_cache_kept_on_the_host() -> None:
    assert _mib(_split("--no-kv-offload")) == {"CUDA0": 1100, "host": 250}


def test_the_split_always_sums_to_the_estimate() -> None:
    for args in ([], ["-ngl", "3"], ["-ts", "1,2"], ["-sm", "none", "-mg", "1"]):
        split = _split(*args, gpus=("CUDA0", "CUDA1"))
        assert sum(split.values()) == ESTIMATE.total, args


def test_gpus_share_equally_by_default_and_by_tensor_split_when_given() -> None:
    equal = _mib(_split(gpus=("CUDA0", "CUDA1")))
    assert equal == {"CUDA0": 600 + 100, "CUDA1": 600, "host": 50}
    weighted = _mib(_split("--tensor-split", "3,1", gpus=("CUDA0", "CUDA1")))
    assert weighted == {"CUDA0": 900 + 100, "CUDA1": 300, "host": 50}


def test_split_mode_none_keeps_everything_on_the_main_gpu() -> None:
    split = _mib(_split("-sm", "none", "-mg", "1", gpus=("CUDA0", "CUDA1")))
    assert split == {"CUDA0": 0, "CUDA1": 1300, "host": 50}


def test_device_picks_and_orders_the_gpus() -> None:
    split = _mib(_split("--device", "CUDA1", gpus=("CUDA0", "CUDA1")))
    assert split == {"CUDA1": 1300, "host": 50}


@pytest.mark.parametrize("main_gpu", ["7", "-1"])
def test_a_main_gpu_out_of_range_falls_back_to_the_first(main_gpu: str) -> None:
    split = _mib(_split("-mg", main_gpu, gpus=("CUDA0", "CUDA1")))
    assert split["CUDA0"] == 600 + 100


def test_a_declared_size_goes_where_the_layers_go() -> None:
    flags = parse(["-ngl", "0"], Layer.MODEL).raise_first()
    assert split_estimate(Footprint.whole(8 * MIB), FlagSet(), ("CUDA0",)) == {
        "CUDA0": 8 * MIB,
        "host": 0,
    }
    assert split_estimate(Footprint.whole(8 * MIB), flags, ("CUDA0",)) == {"host": 8 * MIB}
