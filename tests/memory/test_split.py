"""Splitting a memory estimate between the host and GPUs by the load flags, tensor by tensor
as llama.cpp assigns them (``load_tensors``)."""

from __future__ import annotations

import pytest

from llamasup.flags.flagset import FlagSet, parse
from llamasup.flags.vocabulary import Layer
from llamasup.memory.estimate import MemoryEstimate
from llamasup.memory.split import Footprint, split_estimate

# a 4-layer MoE model: per layer 50 bytes of attention and 200 of experts; the input layer
# (token_embd, 100) and the output layer (101); 10 bytes of KV per layer, compute 30, and 19
# of other overhead (output and runtime buffers, always on the host)
TENSORS = (
    ("token_embd.weight", 100),
    *(
        tensor
        for il in range(4)
        for tensor in ((f"blk.{il}.attn_q.weight", 50), (f"blk.{il}.ffn_up_exps.weight", 200))
    ),
    ("output_norm.weight", 1),
    ("output.weight", 100),
)
WEIGHTS = sum(size for _, size in TENSORS)
MOE = Footprint(
    total=WEIGHTS + 40 + 30 + 19,
    weights=WEIGHTS,
    kv_cache=40,
    compute=30,
    n_layer=4,
    layer_kv=(10, 10, 10, 10),
    tensors=TENSORS,
)
LAYER = 50 + 200 + 10  # one repeating layer with its KV


def _split(
    *args: str, gpus: tuple[str, ...] = ("CUDA0",), budgets: dict[str, int] | None = None
) -> dict[str, int]:
    flags = parse(args, Layer.MODEL).raise_first()
    split = split_estimate(MOE, flags, gpus, budgets)
    assert sum(split.values()) == MOE.total, split
    return split


def test_without_gpus_everything_is_host_memory() -> None:
    assert _split(gpus=()) == {"host": MOE.total}
    assert _split("--device", "none") == {"host": MOE.total}
    assert _split("-ngl", "0") == {"host": MOE.total}


def test_a_full_offload_keeps_only_the_input_layer_and_buffers_on_the_host() -> None:
    full = {"CUDA0": 4 * LAYER + 101 + 30, "host": 100 + 19}
    assert _split() == full  # llama-server's default -ngl is auto: all
    assert _split("-ngl", "all") == full
    assert _split("-ngl", "99") == full


def test_ngl_counts_the_output_layer_as_the_last_one() -> None:
    # -ngl 1: only the output layer; -ngl 3: it and the last two repeating layers
    assert _split("-ngl", "1")["CUDA0"] == 101 + 30
    assert _split("-ngl", "3")["CUDA0"] == 2 * LAYER + 101 + 30


def test_kv_cache_kept_on_the_host() -> None:
    assert _split("--no-kv-offload")["CUDA0"] == 4 * (LAYER - 10) + 101 + 30


def test_cpu_moe_keeps_every_expert_on_the_host() -> None:
    assert _split("--cpu-moe")["CUDA0"] == 4 * (LAYER - 200) + 101 + 30


def test_n_cpu_moe_keeps_the_experts_of_the_first_layers_on_the_host() -> None:
    assert _split("--n-cpu-moe", "3")["CUDA0"] == 4 * LAYER - 3 * 200 + 101 + 30


def test_override_tensor_sends_matching_tensors_to_their_buffer_type() -> None:
    # layers 0-2 go to CUDA0, layer 3 and the output to CUDA1; then blk.0-1's experts are
    # sent to the host and blk.2's to CUDA1
    split = _split("-ot", r"blk\.[01]\.ffn_.*=CPU,blk\.2\.ffn_.*=CUDA1", gpus=("CUDA0", "CUDA1"))
    assert split == {
        "CUDA0": 3 * 50 + 3 * 10 + 30,
        "CUDA1": 200 + LAYER + 101,
        "host": 100 + 19 + 2 * 200,
    }
    # the first match wins, and overrides come before --cpu-moe
    kept = _split("-ot", r"exps=CUDA0", "--cpu-moe")
    assert kept == _split()


def test_repeated_override_flags_all_apply() -> None:
    both = _split("-ot", r"blk\.0\.ffn=CPU", "-ot", r"blk\.1\.ffn=CPU")
    assert both["host"] == 100 + 19 + 2 * 200


def test_gpus_take_contiguous_layers_by_tensor_split_or_by_budget() -> None:
    # five offloaded layers (four and the output) over two GPUs, 3:2
    by_ratio = _split("--tensor-split", "3,2", gpus=("CUDA0", "CUDA1"))
    assert by_ratio["CUDA0"] == 3 * LAYER + 30
    assert by_ratio["CUDA1"] == LAYER + 101
    # without --tensor-split llama.cpp weighs free memory: taken as the budgets
    by_budget = _split(
        gpus=("CUDA0", "CUDA1"), budgets={"CUDA0": 24 << 30, "CUDA1": 16 << 30, "host": 1}
    )
    assert by_budget == by_ratio
    equal = _split(gpus=("CUDA0", "CUDA1"))
    assert (equal["CUDA0"], equal["CUDA1"]) == (3 * LAYER + 30, LAYER + 101)


def test_split_mode_none_keeps_everything_on_the_main_gpu() -> None:
    split = _split("-sm", "none", "-mg", "1", gpus=("CUDA0", "CUDA1"))
    assert split == {"CUDA0": 0, "CUDA1": 4 * LAYER + 101 + 30, "host": 119}


def test_device_picks_and_orders_the_gpus() -> None:
    assert _split("--device", "CUDA1", gpus=("CUDA0", "CUDA1")) == {
        "CUDA1": 4 * LAYER + 101 + 30,
        "host": 119,
    }


@pytest.mark.parametrize("main_gpu", ["7", "-1"])
def test_a_main_gpu_out_of_range_falls_back_to_the_first(main_gpu: str) -> None:
    split = _split("-mg", main_gpu, "-sm", "none", gpus=("CUDA0", "CUDA1"))
    assert split["CUDA1"] == 0


def test_a_declared_size_goes_where_the_layers_go() -> None:
    flags = parse(["-ngl", "0"], Layer.MODEL).raise_first()
    assert split_estimate(Footprint.whole(8 << 20), FlagSet(), ("CUDA0",)) == {
        "CUDA0": 8 << 20,
        "host": 0,
    }
    assert split_estimate(Footprint.whole(8 << 20), flags, ("CUDA0",)) == {"host": 8 << 20}


def test_an_estimate_without_tensors_counts_layers_alike() -> None:
    mib = 1 << 20
    estimate = MemoryEstimate(
        weights=1000 * mib,
        kv_cache=200 * mib,
        overhead=150 * mib,
        total=1350 * mib,
        n_ctx=4096,
        n_seq=1,
        compute=100 * mib,
        n_layer=10,
    )
    flags = parse(["-ngl", "5"], Layer.MODEL).raise_first()  # 4 repeating layers and output
    split = split_estimate(estimate, flags, ("CUDA0",))
    assert split == {"CUDA0": (400 + 80 + 100) * mib, "host": (600 + 120 + 50) * mib}
