"""A tiny random-weight llama model in GGUF, small enough to generate on demand in tests.

The model is real enough for llama-server to load and run (a 2-block llama with a
SentencePiece-style byte vocabulary and a chatml template) but its output is gibberish:
tests must assert on the shape of responses, never on their content.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from llamasup.core.paths import cache_root

#: bump when the generated file changes, so a stale cached copy is never reused
TINY_MODEL_VERSION = 1

N_BLOCKS = 2
N_EMBD = 64
N_HEAD = 4
N_FF = 128
N_CTX_TRAIN = 2048

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# SentencePiece marks a word boundary with U+2581 instead of a space
_SPM_SPACE = "\u2581"


def _vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    tokens += [f"<0x{byte:02X}>" for byte in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    singles = [_SPM_SPACE] + [chr(c) for c in range(0x21, 0x7F)]
    tokens += singles
    types += [gguf.TokenType.NORMAL] * len(singles)
    # the byte-fallback tokenizer prefers higher scores; descending keeps the order stable
    scores = [0.0] * (3 + 256) + [-float(i) for i in range(len(singles))]
    return tokens, scores, [int(t) for t in types]


def _add_metadata(writer: Any) -> int:
    """Hyper-parameters and tokenizer; returns the vocabulary size."""
    tokens, scores, types = _vocab()
    writer.add_name("llamasup-tiny")
    writer.add_block_count(N_BLOCKS)
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(CHATML_TEMPLATE)
    return len(tokens)


def _add_tensors(writer: Any, n_vocab: int, seed: int) -> None:
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> Any:
        # numpy shapes are ggml's ``ne`` reversed: (rows = outputs, cols = inputs)
        return (rng.standard_normal(shape) * 0.02).astype(np.float16)

    def norm() -> Any:
        return np.ones(N_EMBD, dtype=np.float32)

    # no output.weight: llama.cpp ties the output projection to token_embd
    writer.add_tensor("token_embd.weight", weight(n_vocab, N_EMBD))
    for block in range(N_BLOCKS):
        prefix = f"blk.{block}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", norm())
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{prefix}.{name}.weight", weight(N_EMBD, N_EMBD))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", norm())
        writer.add_tensor(f"{prefix}.ffn_gate.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"{prefix}.ffn_up.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"{prefix}.ffn_down.weight", weight(N_EMBD, N_FF))
    writer.add_tensor("output_norm.weight", norm())


def write_tiny_model(path: Path, *, seed: int = 0) -> Path:
    """Write the tiny model to ``path`` (atomically) and return ``path``.

    Equal seeds give byte-identical files.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer = gguf.GGUFWriter(tmp, "llama")
        n_vocab = _add_metadata(writer)
        _add_tensors(writer, n_vocab, seed)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.chmod(0o644)  # mkstemp makes 0600; a shared cache should be readable
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def tiny_model_path(seed: int = 0) -> Path:
    """The cached tiny model for ``seed``, generated on first use and reused afterwards."""
    path = cache_root() / "models" / f"llamasup-tiny-v{TINY_MODEL_VERSION}-seed{seed}.gguf"
    if not path.is_file():
        # concurrent first uses each write their own temp file; the last rename wins, and
        # the files are identical, so readers always see a complete model
        write_tiny_model(path, seed=seed)
    return path
