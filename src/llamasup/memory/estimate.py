"""Memory estimate of a sidecar from GGUF metadata: weights + KV cache + overhead.

The formula follows how llama.cpp b11434 sizes its buffers on CPU (``llama-context.cpp``,
``llama-kv-cache*.cpp``, ``llama-memory-recurrent.cpp``, ``tools/server/server.cpp``)::

    n_seq      = --parallel, or 4 when it is -1 (auto); auto also forces the unified KV cache
    n_ctx      = -c N; -c 0: the trained context; -c unset: n_seq x --kv-unified-per-slot when
                 that is set, else the trained context; then rounded up to a multiple of 256
    streams    = 1 with the unified cache (n_ctx cells shared by all slots),
                 else n_seq streams of pad256(n_ctx / n_seq) cells each
    cells      = n_ctx (unified) or pad256(n_ctx / n_seq), per stream
    swa_cells  = pad256(min(cells, n_swa x (n_seq if unified else 1) + n_ubatch)), per stream;
                 sliding-window layers use swa_cells unless --swa-full
    row(t, n)  = n / block_size(t) x block_bytes(t)        f32 4, f16/bf16 2 bytes per element;
                 q8_0 34, q4_0 18, q4_1 20, iq4_nl 18, q5_0 22, q5_1 24 bytes per 32 elements
    kv_cache   = sum over layers with their own KV cache of
                 streams x cells(layer) x (row(type_k, head_k x n_head_kv(layer))
                                           + row(type_v, head_v x n_head_kv(layer)))
                 head sizes from key_length/value_length (their _swa variants on SWA layers),
                 else n_embd / n_head; MLA models (key_length_mla) have no separate V cache
               + sum over recurrent layers of n_seq x 4 x (n_embd_r + n_embd_s)   [f32 state]
    weights    = sum of the tensor data bytes (every shard of a split model)
    overhead   = compute + output + runtime (+ prompt_cache when asked)
      compute  = n_ubatch x 4 x (8 n_embd + 3 n_ff)                 activations, fitted
               + n_ubatch x 2 x (cells + swa_cells)                  f16 attention masks
               + without flash attention: n_ubatch x n_head x 4 x cells             (KQ)
      output   = n_vocab x 4 x n_seq                                 logits, one row per slot
      runtime  = 18 MiB + 200 bytes x n_vocab                        binary, threads, vocab,
                                                                     samplers, repacked weights

The compute and runtime terms are fitted to measurements (``bench/RESULTS.md``, "Memory
estimate") and lean high. Recurrent and hybrid models (mamba, rwkv, lfm2, jamba, qwen3next...)
count an f32 state per recurrent layer and slot with llama.cpp's row sizes (conv/token-shift
``n_embd_r`` + state ``n_embd_s``), and a KV cache for their attention layers only; layers
whose kind cannot be told from the metadata are counted as both. Not counted: the prompt cache
in RAM (``--cache-ram``, default 8192 MiB, grows with use: pass ``prompt_cache`` to reserve
it), context checkpoints of SWA/recurrent models, speculative draft models, multimodal
projectors, and GPU offload (everything is assumed to be in host memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from llamasup.core.units import format_bytes
from llamasup.errors import FlagError
from llamasup.memory import ggml
from llamasup.memory.gguf import ModelMetadataError, read_model
from llamasup.memory.shape import ModelShape, model_shape

__all__ = [
    "CACHE_TYPES",
    "LoadSettings",
    "MemoryEstimate",
    "ModelMetadataError",
    "estimate",
    "estimate_shape",
    "read_shape",
]

_MIB = 1 << 20
_PAD = 256
#: what -ctk/-ctv accept (llama-server b11434 --help)
CACHE_TYPES: dict[str, int] = {
    name: ggml.type_id(name.upper())
    for name in ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
}
AUTO_PARALLEL = 4
RUNTIME_BASE = 18 * _MIB
RUNTIME_PER_TOKEN = 200


@dataclass(frozen=True)
class LoadSettings:
    """The llama-server flags that size memory, with the server's defaults.

    ``ctx_size`` None means -c was not given (which is not the same as -c 0 when
    ``kv_unified_per_slot`` is set); ``kv_unified`` None means neither -kvu nor -no-kvu.
    ``flash_attn``: -fa auto resolves to on for the CPU backend. ``prompt_cache``: bytes of
    ``--cache-ram`` to reserve on top (0: not counted).
    """

    ctx_size: int | None = None
    n_parallel: int = -1
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    swa_full: bool = False
    kv_unified: bool | None = None
    kv_unified_per_slot: int = 0
    n_ubatch: int = 512
    flash_attn: bool = True
    prompt_cache: int = 0

    def __post_init__(self) -> None:
        for flag, value in (
            ("--cache-type-k", self.cache_type_k),
            ("--cache-type-v", self.cache_type_v),
        ):
            if value not in CACHE_TYPES:
                allowed = ", ".join(CACHE_TYPES)
                raise FlagError(flag, f"unknown cache type {value!r}; allowed: {allowed}")
        if self.ctx_size is not None and self.ctx_size < 0:
            raise FlagError("--ctx-size", f"must be >= 0, got {self.ctx_size}")
        if self.n_ubatch <= 0:
            raise FlagError("--ubatch-size", f"must be > 0, got {self.n_ubatch}")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a sidecar is expected to hold; ``kv_cache`` includes any recurrent state.

    ``compute`` is the compute-buffer part of ``overhead`` (llama-server logs its own).
    """

    weights: int
    kv_cache: int
    overhead: int
    total: int
    n_ctx: int
    n_seq: int
    compute: int = 0
    notes: tuple[str, ...] = ()
    #: repeating layers of the model (what ``-ngl`` counts)
    n_layer: int = 0
    #: KV cache and recurrent state bytes of each layer (they sum to ``kv_cache``)
    layer_kv: tuple[int, ...] = field(default=(), repr=False)
    #: (name, bytes) of the model's tensors (shared with its shape; not copied per estimate)
    tensors: tuple[tuple[str, int], ...] = field(default=(), repr=False, compare=False)

    def describe(self) -> str:
        return (
            f"{format_bytes(self.total)} = {format_bytes(self.weights)} weights + "
            f"{format_bytes(self.kv_cache)} KV ({self.n_ctx} ctx, {self.n_seq} slots) + "
            f"{format_bytes(self.overhead)} overhead"
        )


def estimate(
    gguf_path: str | Path,
    *,
    ctx_size: int | None = None,
    n_parallel: int = -1,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
    swa_full: bool = False,
    kv_unified: bool | None = None,
    kv_unified_per_slot: int = 0,
    n_ubatch: int = 512,
    flash_attn: bool = True,
    prompt_cache: int = 0,
) -> MemoryEstimate:
    """Estimate a llama-server's memory for this model and these flags.

    Raises ModelMetadataError when the file is missing, not GGUF, or lacks the hyperparameters
    (the caller may fall back to a profile's ``memory:``), FlagError on a bad cache type.
    """
    settings = LoadSettings(
        ctx_size=ctx_size,
        n_parallel=n_parallel,
        cache_type_k=cache_type_k,
        cache_type_v=cache_type_v,
        swa_full=swa_full,
        kv_unified=kv_unified,
        kv_unified_per_slot=kv_unified_per_slot,
        n_ubatch=n_ubatch,
        flash_attn=flash_attn,
        prompt_cache=prompt_cache,
    )
    return estimate_shape(read_shape(gguf_path), settings)


def read_shape(gguf_path: str | Path) -> ModelShape:
    """The model's shape, cached on (path, size, mtime): one model serves many agents."""
    path = Path(gguf_path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelMetadataError(path, "no such file" if not path.exists() else str(exc)) from exc
    return _shape_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=512)
def _shape_cached(path: str, size: int, mtime_ns: int) -> ModelShape:
    del size, mtime_ns  # part of the cache key only
    return model_shape(read_model(path))


def _pad(value: int) -> int:
    return (value + _PAD - 1) // _PAD * _PAD


def _row_bytes(cache_type: str, elements: int) -> int:
    block, size = ggml.block(CACHE_TYPES[cache_type])
    return (elements + block - 1) // block * size


def estimate_shape(shape: ModelShape, settings: LoadSettings) -> MemoryEstimate:
    """The formula of the module docstring, on an already-read model shape."""
    notes = list(shape.notes)
    auto = settings.n_parallel < 0
    n_seq = AUTO_PARALLEL if auto else max(1, settings.n_parallel)
    unified = True if auto else bool(settings.kv_unified)
    if settings.ctx_size:
        n_ctx = settings.ctx_size
    elif settings.ctx_size is None and settings.kv_unified_per_slot > 0:
        n_ctx = n_seq * settings.kv_unified_per_slot
    else:
        n_ctx = shape.n_ctx_train
    if n_ctx <= 0:
        raise ModelMetadataError(shape.path, "no context size: -c unset and no context_length")
    n_ctx = _pad(n_ctx)
    streams = 1 if unified else n_seq
    cells = n_ctx if unified else _pad(n_ctx // n_seq)
    swa_cells = cells
    if shape.n_swa > 0 and not settings.swa_full:
        swa_cells = _pad(min(cells, shape.n_swa * (n_seq if unified else 1) + settings.n_ubatch))

    state = n_seq * 4 * (shape.n_embd_r + shape.n_embd_s)
    layer_kv = [state if shape.recurrent_layers[il] else 0 for il in range(shape.n_layer)]
    for il in range(shape.n_layer):
        if not shape.kv_layers[il]:
            continue
        swa = shape.swa_layers[il]
        heads = shape.n_head_kv[il]
        k_row = _row_bytes(
            settings.cache_type_k, (shape.head_k_swa if swa else shape.head_k) * heads
        )
        v_row = 0
        if not shape.mla:
            v_row = _row_bytes(
                settings.cache_type_v, (shape.head_v_swa if swa else shape.head_v) * heads
            )
        layer_kv[il] += streams * (swa_cells if swa else cells) * (k_row + v_row)
    kv = sum(layer_kv)

    ubatch = settings.n_ubatch
    has_swa = any(s and k for s, k in zip(shape.swa_layers, shape.kv_layers, strict=True))
    # one ubatch attends within one stream, so the masks span a stream's cells
    mask_cells = cells + (swa_cells if has_swa else 0)
    compute = ubatch * 4 * (8 * shape.n_embd + 3 * shape.n_ff) + ubatch * 2 * mask_cells
    if not settings.flash_attn:
        compute += ubatch * shape.n_head * 4 * cells
    output = shape.n_vocab * 4 * n_seq
    runtime = RUNTIME_BASE + RUNTIME_PER_TOKEN * shape.n_vocab
    overhead = compute + output + runtime + settings.prompt_cache
    for flag, cache_type, head in (
        ("--cache-type-k", settings.cache_type_k, shape.head_k),
        ("--cache-type-v", settings.cache_type_v, shape.head_v),
    ):
        block = ggml.block(CACHE_TYPES[cache_type])[0]
        if head % block:
            notes.append(
                f"{flag} {cache_type}: block size {block} does not divide the head size "
                f"{head}; llama-server refuses to start"
            )
    if n_ctx // (1 if unified else n_seq) > shape.n_ctx_train > 0:
        notes.append(f"context per slot exceeds the trained context ({shape.n_ctx_train})")
    return MemoryEstimate(
        weights=shape.weights,
        kv_cache=kv,
        overhead=overhead,
        total=shape.weights + kv + overhead,
        n_ctx=n_ctx,
        n_seq=n_seq,
        compute=compute,
        notes=tuple(notes),
        n_layer=shape.n_layer,
        layer_kv=tuple(layer_kv),
        tensors=shape.tensors,
    )
