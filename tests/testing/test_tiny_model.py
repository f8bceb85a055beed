"""The generated tiny model is deterministic, well-formed GGUF, and cached once."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from llamasup.testing import tiny_model_path, write_tiny_model


def test_equal_seeds_give_identical_files(tmp_path: Path) -> None:
    first = write_tiny_model(tmp_path / "a.gguf", seed=7)
    second = write_tiny_model(tmp_path / "b.gguf", seed=7)
    other = write_tiny_model(tmp_path / "c.gguf", seed=8)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf", "b.gguf", "c.gguf"]


def test_model_layout(tmp_path: Path) -> None:
    reader = gguf.GGUFReader(write_tiny_model(tmp_path / "m.gguf"))

    def field(name: str) -> object:
        return reader.fields[name].contents()

    assert field("general.architecture") == "llama"
    assert field("llama.block_count") == 2
    assert field("llama.embedding_length") == 64
    assert field("llama.attention.head_count") == 4
    assert field("llama.feed_forward_length") == 128
    assert field("tokenizer.ggml.model") == "llama"
    assert (field("tokenizer.ggml.bos_token_id"), field("tokenizer.ggml.eos_token_id")) == (1, 2)
    assert "<|im_start|>" in str(field("tokenizer.chat_template"))
    tokens = field("tokenizer.ggml.tokens")
    assert isinstance(tokens, list)
    assert tokens[:4] == ["<unk>", "<s>", "</s>", "<0x00>"]

    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors  # tied to token_embd
    assert tensors["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.1.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert list(tensors["blk.0.ffn_gate.weight"].shape) == [64, 128]  # ggml order: in, out
    assert np.all(np.asarray(tensors["output_norm.weight"].data) == 1.0)
    assert len(tensors) == 2 + 2 * 9


def test_tiny_model_path_generates_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMASUP_CACHE_DIR", str(tmp_path))
    path = tiny_model_path()
    assert path.is_relative_to(tmp_path / "models")
    stamp = path.stat().st_mtime_ns
    assert tiny_model_path() == path
    assert path.stat().st_mtime_ns == stamp
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
