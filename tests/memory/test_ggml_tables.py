"""llamasup's own GGUF tables equal gguf-py's (which the front no longer imports: numpy)."""

from __future__ import annotations

import gguf

from llamasup.memory import ggml


def test_value_types_are_gguf_pys() -> None:
    assert {t.name: int(t) for t in ggml.ValueType} == {t.name: int(t) for t in gguf.GGUFValueType}


def test_tensor_block_sizes_are_gguf_pys() -> None:
    theirs = {int(t): (t.name, *gguf.GGML_QUANT_SIZES[t]) for t in gguf.GGML_QUANT_SIZES}
    assert theirs == ggml.TENSOR_TYPES
