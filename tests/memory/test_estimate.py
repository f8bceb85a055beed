"""Memory estimates on small GGUF files written here: exact numbers from the formula."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import gguf
import numpy as np
import pytest

from llamasup.errors import FlagError
from llamasup.flags.flagset import FlagSet
from llamasup.memory.estimate import (
    RUNTIME_BASE,
    RUNTIME_PER_TOKEN,
    LoadSettings,
    estimate,
    estimate_shape,
    read_shape,
)
from llamasup.memory.gguf import ModelMetadataError, read_header, read_model
from llamasup.memory.split import split_estimate

VOCAB = 300
Extra = Callable[[gguf.GGUFWriter], None]


def write_model(
    path: Path,
    arch: str = "llama",
    *,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int | Sequence[int] = 2,
    n_ff: int = 128,
    context: int = 1024,
    extra: Extra | None = None,
) -> Path:
    """A metadata-complete model; tensors are few but of known sizes (no need to run it)."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_context_length(context)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    if isinstance(n_head_kv, int):
        writer.add_head_count_kv(n_head_kv)
    else:
        writer.add_array(f"{arch}.attention.head_count_kv", list(n_head_kv))
    writer.add_token_list([f"t{i}" for i in range(VOCAB)])
    if extra is not None:
        extra(writer)
    rng = np.random.default_rng(0)
    writer.add_tensor("token_embd.weight", rng.standard_normal((VOCAB, n_embd)).astype(np.float16))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    quantized = gguf.quants.quantize(
        rng.standard_normal((n_embd, n_embd)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0
    )
    writer.add_tensor("blk.0.attn_q.weight", quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def weights_of(n_embd: int = 64) -> int:
    return VOCAB * n_embd * 2 + n_embd * 4 + n_embd * n_embd // 32 * 34


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_model(tmp_path / "tiny.gguf")


# head_dim 64/4 = 16, 2 KV heads: 32 K and 32 V elements per layer and cell
F16_ROW = 32 * 2
Q8_ROW = 34  # one 32-element q8_0 block
Q4_ROW = 18


@pytest.mark.parametrize(
    ("settings", "cells", "row_k", "row_v"),
    [
        (LoadSettings(ctx_size=512, n_parallel=1), 512, F16_ROW, F16_ROW),
        (LoadSettings(ctx_size=1000, n_parallel=1), 1024, F16_ROW, F16_ROW),  # padded to 256
        (LoadSettings(ctx_size=0, n_parallel=1), 1024, F16_ROW, F16_ROW),  # trained context
        (LoadSettings(n_parallel=1), 1024, F16_ROW, F16_ROW),
        (LoadSettings(ctx_size=512), 512, F16_ROW, F16_ROW),  # auto: 4 slots share 512
        (LoadSettings(ctx_size=512, cache_type_k="q8_0", cache_type_v="q4_0"), 512, Q8_ROW, Q4_ROW),
        (LoadSettings(ctx_size=512, cache_type_k="f32", cache_type_v="bf16"), 512, 128, F16_ROW),
        # not unified: 2 streams of pad256(600 / 2) = 512 cells
        (LoadSettings(ctx_size=600, n_parallel=2), 1024, F16_ROW, F16_ROW),
        (LoadSettings(ctx_size=600, n_parallel=2, kv_unified=True), 768, F16_ROW, F16_ROW),
        # --kv-unified-per-slot sizes the pool when -c is not given...
        (LoadSettings(n_parallel=2, kv_unified=True, kv_unified_per_slot=300), 768, 64, 64),
        # ... but not when -c 0 asks for the full trained context
        (LoadSettings(ctx_size=0, n_parallel=2, kv_unified_per_slot=300), 1024, 64, 64),
    ],
)
def test_kv_cache_of_a_plain_gqa_model(
    tiny: Path, settings: LoadSettings, cells: int, row_k: int, row_v: int
) -> None:
    result = estimate_shape(read_shape(tiny), settings)
    assert result.kv_cache == 2 * cells * (row_k + row_v)
    assert result.weights == weights_of()
    assert result.total == result.weights + result.kv_cache + result.overhead


def test_overhead_formula(tiny: Path) -> None:
    result = estimate(tiny, ctx_size=512, n_parallel=1)
    compute = 512 * 4 * (8 * 64 + 3 * 128) + 512 * 2 * 512
    assert result.overhead == compute + VOCAB * 4 * 1 + RUNTIME_BASE + RUNTIME_PER_TOKEN * VOCAB
    without_fa = estimate(tiny, ctx_size=512, n_parallel=1, flash_attn=False)
    assert without_fa.overhead - result.overhead == 512 * 4 * 4 * 512
    cached = estimate(tiny, ctx_size=512, n_parallel=1, prompt_cache=1 << 30)
    assert cached.total - result.total == 1 << 30


def test_estimate_keyword_api_matches_settings(tiny: Path) -> None:
    assert estimate(tiny, ctx_size=2048, n_parallel=2, cache_type_k="q8_0") == estimate_shape(
        read_shape(tiny), LoadSettings(ctx_size=2048, n_parallel=2, cache_type_k="q8_0")
    )
    assert estimate(tiny, ctx_size=2048).n_seq == 4
    assert "KV" in estimate(tiny).describe()


def _gemma3(writer: gguf.GGUFWriter) -> None:
    writer.add_sliding_window(128)
    writer.add_key_length(32)
    writer.add_value_length(32)


@pytest.fixture
def gemma(tmp_path: Path) -> Path:
    # 6 layers, pattern 6: layers 0-4 use the window, layer 5 is global; 1 KV head of 32
    return write_model(
        tmp_path / "swa.gguf", "gemma3", n_layer=6, n_head_kv=1, context=8192, extra=_gemma3
    )


ROW_SWA = (32 + 32) * 2  # K + V, f16, one KV head of 32


@pytest.mark.parametrize(
    ("settings", "window_cells", "full_cells"),
    [
        # pad256(min(4096, 128 x 1 + 512)) = 768
        (LoadSettings(ctx_size=4096, n_parallel=1), 768, 4096),
        # unified, 4 slots: pad256(128 x 4 + 512) = 1024
        (LoadSettings(ctx_size=4096), 1024, 4096),
        # the window never exceeds the context
        (LoadSettings(ctx_size=512, n_parallel=1), 512, 512),
        (LoadSettings(ctx_size=4096, n_parallel=1, swa_full=True), 4096, 4096),
        (LoadSettings(ctx_size=4096, n_parallel=1, n_ubatch=128), 256, 4096),
    ],
)
def test_sliding_window_layers_use_a_window_sized_cache(
    gemma: Path, settings: LoadSettings, window_cells: int, full_cells: int
) -> None:
    result = estimate_shape(read_shape(gemma), settings)
    assert result.kv_cache == (5 * window_cells + 1 * full_cells) * ROW_SWA


def test_explicit_sliding_window_pattern(tmp_path: Path) -> None:
    def pattern(writer: gguf.GGUFWriter) -> None:
        _gemma3(writer)
        writer.add_sliding_window_pattern([True, False, True, False, False, False])

    path = write_model(tmp_path / "p.gguf", "gemma3", n_layer=6, n_head_kv=1, extra=pattern)
    result = estimate(path, ctx_size=4096, n_parallel=1)
    assert result.kv_cache == (2 * 768 + 4 * 4096) * ROW_SWA


def test_window_of_an_arch_without_a_known_pattern_is_ignored(tmp_path: Path) -> None:
    path = write_model(tmp_path / "q.gguf", "qwen2", n_head_kv=1, extra=_gemma3)
    result = estimate(path, ctx_size=4096, n_parallel=1)
    assert result.kv_cache == 2 * 4096 * ROW_SWA
    assert any("sliding_window ignored" in note for note in result.notes)


def test_recurrent_model_counts_its_state_per_slot(tmp_path: Path) -> None:
    def ssm(writer: gguf.GGUFWriter) -> None:
        writer.add_uint32("mamba.ssm.conv_kernel", 4)
        writer.add_uint32("mamba.ssm.inner_size", 128)
        writer.add_uint32("mamba.ssm.state_size", 16)

    path = write_model(tmp_path / "m.gguf", "mamba", n_head=0, n_head_kv=0, extra=ssm)
    per_layer = ((4 - 1) * 128 + 16 * 128) * 4
    assert estimate(path, ctx_size=4096, n_parallel=1).kv_cache == 2 * per_layer
    assert estimate(path, ctx_size=4096, n_parallel=3).kv_cache == 2 * 3 * per_layer


def test_hybrid_model_splits_layers_by_kv_heads(tmp_path: Path) -> None:
    def ssm(writer: gguf.GGUFWriter) -> None:
        writer.add_uint32("jamba.ssm.conv_kernel", 4)
        writer.add_uint32("jamba.ssm.inner_size", 128)
        writer.add_uint32("jamba.ssm.state_size", 16)

    path = write_model(tmp_path / "j.gguf", "jamba", n_head_kv=[0, 2], extra=ssm)
    state = ((4 - 1) * 128 + 16 * 128) * 4
    assert estimate(path, ctx_size=512, n_parallel=1).kv_cache == state + 512 * 2 * F16_ROW


def test_mla_has_no_separate_v_cache(tmp_path: Path) -> None:
    def mla(writer: gguf.GGUFWriter) -> None:
        writer.add_key_length(96)
        writer.add_value_length(64)
        writer.add_key_length_mla(48)
        writer.add_uint32("deepseek2.attention.value_length_mla", 32)

    path = write_model(tmp_path / "d.gguf", "deepseek2", n_head_kv=1, extra=mla)
    assert estimate(path, ctx_size=512, n_parallel=1).kv_cache == 2 * 512 * 96 * 2


def test_split_model_sums_its_shards(tmp_path: Path) -> None:
    def shard(number: int) -> Extra:
        def extra(writer: gguf.GGUFWriter) -> None:
            writer.add_uint16("split.count", 2)
            writer.add_uint16("split.no", number - 1)

        return extra

    for number in (1, 2):
        write_model(tmp_path / f"big-{number:05d}-of-00002.gguf", extra=shard(number))
    shape = read_shape(tmp_path / "big-00001-of-00002.gguf")
    assert shape.weights == 2 * weights_of()
    (tmp_path / "big-00002-of-00002.gguf").unlink()
    with pytest.raises(ModelMetadataError, match="no such file"):
        read_model(tmp_path / "big-00001-of-00002.gguf")


def test_header_reader_agrees_with_gguf_reader(gemma: Path) -> None:
    ours = read_header(gemma)
    theirs = gguf.GGUFReader(gemma)
    assert ours.tensor_bytes == sum(int(t.n_bytes) for t in theirs.tensors)
    assert ours.tensor_count == len(theirs.tensors)
    for key in ("gemma3.block_count", "gemma3.attention.sliding_window", "general.architecture"):
        assert ours.metadata[key] == theirs.fields[key].contents()
    assert ours.array_lengths["tokenizer.ggml.tokens"] == VOCAB


def test_shape_is_cached_until_the_file_changes(tiny: Path) -> None:
    first = read_shape(tiny)
    assert read_shape(tiny) is first
    write_model(tiny, n_embd=128)
    stat = tiny.stat()
    os.utime(tiny, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert read_shape(tiny).n_embd == 128


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "too short"),
        (b"PK\x03\x04" + b"\0" * 64, "bad magic"),
        (b"GGUF\x01\0\0\0" + b"\0" * 64, "unsupported GGUF version 1"),
        (b"GGUF\x03\0\0\0" + (5).to_bytes(8, "little") + (9).to_bytes(8, "little"), "truncated"),
    ],
)
def test_unreadable_files_raise_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelMetadataError, match=message) as caught:
        estimate(path, ctx_size=512)
    assert str(path) in str(caught.value)


def test_missing_file_and_missing_keys(tmp_path: Path) -> None:
    with pytest.raises(ModelMetadataError, match="no such file"):
        estimate(tmp_path / "nope.gguf")
    writer = gguf.GGUFWriter(tmp_path / "bare.gguf", "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelMetadataError, match="block_count"):
        estimate(tmp_path / "bare.gguf")


def test_no_context_anywhere_is_an_error(tmp_path: Path) -> None:
    path = write_model(tmp_path / "noctx.gguf", context=0)
    with pytest.raises(ModelMetadataError, match="no context size"):
        estimate(path, n_parallel=1)


def test_bad_flags(tiny: Path) -> None:
    with pytest.raises(FlagError, match="--cache-type-k: unknown cache type 'q3_k'"):
        estimate(tiny, cache_type_k="q3_k")
    with pytest.raises(FlagError, match="--ctx-size"):
        LoadSettings(ctx_size=-1)


def test_masks_span_one_stream(tiny: Path) -> None:
    unified = estimate(tiny, ctx_size=2048, n_parallel=2, kv_unified=True)
    per_slot = estimate(tiny, ctx_size=4096, n_parallel=2)
    # 2 streams of 2048 cells attend like one 2048-cell unified cache
    assert per_slot.compute == unified.compute
    assert per_slot.kv_cache == 2 * unified.kv_cache


def test_quantized_cache_that_cannot_split_heads_is_noted(tmp_path: Path) -> None:
    path = write_model(tmp_path / "h16.gguf", n_head_kv=4)  # head size 64 / 4 = 16
    result = estimate(path, ctx_size=512, cache_type_k="q8_0")
    assert any("does not divide the head size 16" in note for note in result.notes)
    assert estimate(path, ctx_size=512).notes == ()


def test_an_estimate_carries_its_tensors_and_kv_by_layer_for_a_split(tiny: Path) -> None:
    found = estimate(tiny, ctx_size=512, n_parallel=1)
    assert [name for name, _ in found.tensors] == [
        "token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight",
    ]  # fmt: skip
    assert sum(size for _, size in found.tensors) == found.weights == weights_of()
    assert len(found.layer_kv) == 2 and sum(found.layer_kv) == found.kv_cache
    split = split_estimate(found, FlagSet(), ("CUDA0",))
    # all offloaded: only the token embeddings and the output and runtime buffers stay
    token_embd = VOCAB * 64 * 2
    assert split["host"] == token_embd + found.overhead - found.compute
