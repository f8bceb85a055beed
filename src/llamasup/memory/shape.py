"""A model's shape as llama.cpp sees it when it sizes the KV cache and recurrent state.

Interprets the GGUF header read by ``llamasup.memory.gguf``: per-layer KV head counts, head
sizes, which layers use a sliding window, which keep a recurrent state. The formula that
turns this into bytes lives in ``llamasup.memory.estimate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llamasup.memory.gguf import GGUFHeader, ModelMetadataError, Value

#: architectures whose sliding-window layers follow a fixed pattern when the GGUF has none:
#: (n_pattern, dense_first). Every n_pattern-th layer is full attention: the last of each group,
#: or the first when dense_first. Archs not listed ignore ``sliding_window`` unless the GGUF
#: carries ``sliding_window_pattern`` (a full cache is the safe overestimate).
_SWA_PATTERNS: dict[str, tuple[int, bool]] = {
    "gemma2": (2, False),
    "gemma3": (6, False),
    "gemma3n": (5, False),
    "cohere2": (4, False),
    "cohere2moe": (4, True),
    "exaone4": (4, False),
    "exaone-moe": (4, False),
    "olmo2": (4, False),
    "plamo3": (8, False),
    "llama4": (4, False),
    "muse-glimmer": (4, False),
    "gpt-oss": (2, False),
    "afmoe": (4, False),
    "laguna": (4, True),
    "mellum": (4, False),
    "smallthinker": (4, True),
}
_LLAMA4_CHUNK = 8192


@dataclass(frozen=True)
class ModelShape:
    """The hyperparameters that size a model's KV cache and state, per layer where they vary."""

    path: str
    architecture: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int
    n_head: int
    n_head_kv: tuple[int, ...]
    head_k: int
    head_v: int
    head_k_swa: int
    head_v_swa: int
    mla: bool
    n_swa: int
    swa_layers: tuple[bool, ...]
    kv_layers: tuple[bool, ...]
    recurrent_layers: tuple[bool, ...]
    n_embd_r: int
    n_embd_s: int
    weights: int
    notes: tuple[str, ...] = ()
    #: (name, bytes) of each tensor: where a partial offload puts them
    tensors: tuple[tuple[str, int], ...] = field(default=(), repr=False, compare=False)


class _Keys:
    def __init__(self, header: GGUFHeader, arch: str) -> None:
        self.header = header
        self.arch = arch

    def get(self, name: str) -> Value | None:
        return self.header.metadata.get(f"{self.arch}.{name}")

    def integer(self, name: str, default: int = 0) -> int:
        value = self.get(name)
        if isinstance(value, tuple):
            numbers = [int(v) for v in value if isinstance(v, int | float)]
            return max(numbers, default=default)
        if isinstance(value, int | float):
            return int(value)
        return default

    def per_layer(self, name: str, n_layer: int, default: int) -> tuple[int, ...]:
        value = self.get(name)
        if isinstance(value, tuple):
            numbers = tuple(int(v) for v in value if isinstance(v, int | float))
            if len(numbers) != n_layer:
                raise ModelMetadataError(
                    self.header.path,
                    f"{self.arch}.{name} has {len(numbers)} entries for {n_layer} layers",
                )
            return numbers
        return (self.integer(name, default),) * n_layer


def model_shape(header: GGUFHeader) -> ModelShape:
    """Interpret a header the way llama.cpp sizes its memory (see ``llamasup.memory.estimate``)."""
    arch = header.metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ModelMetadataError(header.path, "no general.architecture key")
    keys = _Keys(header, arch)
    n_layer = keys.integer("block_count")
    n_embd = keys.integer("embedding_length")
    if n_layer <= 0 or n_embd <= 0:
        raise ModelMetadataError(header.path, f"no {arch}.block_count / {arch}.embedding_length")
    notes: list[str] = []
    n_head = keys.integer("attention.head_count")
    n_head_kv = keys.per_layer("attention.head_count_kv", n_layer, n_head)
    head_k = keys.integer("attention.key_length", n_embd // n_head if n_head else 0)
    head_v = keys.integer("attention.value_length", n_embd // n_head if n_head else 0)
    swa_layers, n_swa = _sliding_window(keys, n_layer, notes)
    recurrent, both = _recurrent_layers(keys, n_layer, n_head_kv)
    trunk = n_layer - keys.integer("nextn_predict_layers")
    own_kv = n_layer - keys.integer("attention.shared_kv_layers")
    kv_layers = tuple(
        n_head_kv[il] > 0 and (both or not recurrent[il]) and il < min(trunk, own_kv)
        for il in range(n_layer)
    )
    n_embd_r, n_embd_s = _recurrent_state(keys, n_embd, n_head)
    if any(recurrent) and n_embd_r + n_embd_s == 0:
        notes.append(f"{arch}: recurrent layers of an unknown kind, state not counted")
    vocab = header.array_lengths.get("tokenizer.ggml.tokens") or keys.integer("vocab_size")
    return ModelShape(
        path=header.path,
        architecture=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_ff=keys.integer("feed_forward_length"),
        n_vocab=vocab,
        n_ctx_train=keys.integer("context_length"),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_k=head_k,
        head_v=head_v,
        head_k_swa=keys.integer("attention.key_length_swa", head_k),
        head_v_swa=keys.integer("attention.value_length_swa", head_v),
        mla=keys.get("attention.key_length_mla") is not None,
        n_swa=n_swa,
        swa_layers=swa_layers,
        kv_layers=kv_layers,
        recurrent_layers=recurrent,
        n_embd_r=n_embd_r,
        n_embd_s=n_embd_s,
        weights=header.tensor_bytes,
        notes=tuple(notes),
        tensors=header.tensors,
    )


def _sliding_window(keys: _Keys, n_layer: int, notes: list[str]) -> tuple[tuple[bool, ...], int]:
    n_swa = keys.integer("attention.sliding_window")
    if keys.arch == "llama4":
        # chunked attention: on unless the GGUF says sliding_window = 0
        n_swa = 0 if keys.get("attention.sliding_window") == 0 else _LLAMA4_CHUNK
    none = (False,) * n_layer
    if n_swa <= 0:
        return none, 0
    pattern = keys.get("attention.sliding_window_pattern")
    if isinstance(pattern, tuple):
        if len(pattern) != n_layer:
            raise ModelMetadataError(
                keys.header.path, f"sliding_window_pattern has {len(pattern)} entries"
            )
        return tuple(bool(v) for v in pattern), n_swa
    n_pattern, dense_first = _SWA_PATTERNS.get(keys.arch, (-1, False))
    if isinstance(pattern, int):
        n_pattern = pattern
    if n_pattern < 0:
        notes.append(f"{keys.arch}: sliding_window ignored (no known layer pattern)")
        return none, 0
    if dense_first:
        layers = tuple(n_pattern == 0 or il % n_pattern != 0 for il in range(n_layer))
    else:
        layers = tuple(n_pattern == 0 or il % n_pattern < n_pattern - 1 for il in range(n_layer))
    return layers, n_swa


def _recurrent_layers(
    keys: _Keys, n_layer: int, n_head_kv: tuple[int, ...]
) -> tuple[tuple[bool, ...], bool]:
    """Which layers keep a recurrent state, and whether those layers also have attention."""
    has_state = any(
        keys.integer(name) > 0
        for name in ("ssm.state_size", "ssm.inner_size", "wkv.head_size", "shortconv.l_cache")
    )
    if not has_state:
        return (False,) * n_layer, False
    interval = keys.integer("full_attention_interval")
    if interval > 0:
        return tuple((il + 1) % interval != 0 for il in range(n_layer)), False
    if isinstance(keys.get("attention.head_count_kv"), tuple) or not any(n_head_kv):
        return tuple(kv == 0 for kv in n_head_kv), False
    # a scalar head count with a recurrent state (falcon-h1): every layer has both
    return (True,) * n_layer, True


def _recurrent_state(keys: _Keys, n_embd: int, n_head: int) -> tuple[int, int]:
    """Per-layer, per-sequence f32 row sizes of the recurrent memory: (conv/shift, state)."""
    wkv = keys.integer("wkv.head_size")
    if wkv:
        return keys.integer("token_shift_count", 2) * n_embd, n_embd * wkv
    l_cache = keys.integer("shortconv.l_cache")
    if l_cache:
        return n_embd * (l_cache - 1), 0
    d_conv = keys.integer("ssm.conv_kernel")
    d_inner = keys.integer("ssm.inner_size")
    d_state = keys.integer("ssm.state_size")
    n_group = keys.integer("ssm.group_count")
    conv = max(d_conv - 1, 0) * (d_inner + 2 * n_group * d_state)
    return conv, d_state * d_inner
