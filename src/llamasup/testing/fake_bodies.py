"""Response bodies of the fake llama-server, as pure functions of one generation.

Shapes follow what the real llama-server b11434 sends (checked against a running build),
plus an ``x_fake`` field that tells tests exactly what request arrived.
Stdlib only: this module is imported by the fake at start-up, which must stay fast.
"""

from __future__ import annotations

import base64
import json
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    # typing and dataclasses cost ~15 ms to import; the fake must start fast
    from typing import Any

    JsonObject = dict[str, Any]

SYSTEM_FINGERPRINT = "b11434-fake"

# every token id is a byte value shifted past <unk>, <s>, </s>, like the tiny model's vocab
BYTE_TOKEN_OFFSET = 3


def tokenize(text: str) -> list[int]:
    return [byte + BYTE_TOKEN_OFFSET for byte in text.encode("utf-8")]


def detokenize(tokens: list[int]) -> str:
    data = bytes((t - BYTE_TOKEN_OFFSET) & 0xFF for t in tokens if t >= BYTE_TOKEN_OFFSET)
    return data.decode("utf-8", errors="replace")


class Generation:
    """What one fake inference produced; every endpoint renders it in its own dialect."""

    __slots__ = (
        "created",
        "finish_reason",
        "ident",
        "model",
        "pieces",
        "prompt_tokens",
        "step_ms",
        "x_fake",
    )

    def __init__(
        self,
        *,
        ident: str,
        model: str,
        created: int,
        prompt_tokens: int,
        pieces: tuple[str, ...],
        finish_reason: str,  # "stop" or "length", in OpenAI terms
        x_fake: JsonObject,
        step_ms: float = 0.0,
    ) -> None:
        self.step_ms = step_ms  # the time one piece takes (FAKE_LLAMA_STREAM_DELAY)
        self.ident = ident
        self.model = model
        self.created = created
        self.prompt_tokens = prompt_tokens
        self.pieces = pieces
        self.finish_reason = finish_reason
        self.x_fake = x_fake

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def usage(self) -> JsonObject:
        completion = len(self.pieces)
        return {
            "completion_tokens": completion,
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": completion + self.prompt_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
        }

    def timings(self) -> JsonObject:
        # the real server's fields; times as the fake spends them (0.1 ms when it does not)
        predicted = len(self.pieces)
        predicted_ms = max(0.1, predicted * self.step_ms)
        prompt_ms = 0.1
        return {
            "cache_n": 0,
            "prompt_n": self.prompt_tokens,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / max(1, self.prompt_tokens),
            "prompt_per_second": self.prompt_tokens * 1000.0 / prompt_ms,
            "predicted_n": predicted,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / max(1, predicted),
            "predicted_per_second": predicted * 1000.0 / predicted_ms,
        }


def sse(data: JsonObject | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {payload}\n\n".encode()


def error_body(code: int, message: str, kind: str) -> JsonObject:
    return {"error": {"code": code, "message": message, "type": kind}}


# --- OpenAI chat ------------------------------------------------------------------------


def chat_response(gen: Generation) -> JsonObject:
    return {
        "choices": [
            {
                "finish_reason": gen.finish_reason,
                "index": 0,
                "message": {"role": "assistant", "content": gen.text},
            }
        ],
        "created": gen.created,
        "model": gen.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "object": "chat.completion",
        "usage": gen.usage(),
        "id": f"chatcmpl-{gen.ident}",
        "timings": gen.timings(),
        "x_fake": gen.x_fake,
    }


def chat_stream(gen: Generation, include_usage: bool) -> list[bytes]:
    def chunk(choices: list[JsonObject], **extra: Any) -> bytes:
        return sse(
            {
                "choices": choices,
                "created": gen.created,
                "id": f"chatcmpl-{gen.ident}",
                "model": gen.model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "object": "chat.completion.chunk",
                **extra,
            }
        )

    def choice(delta: JsonObject, finish: str | None = None) -> list[JsonObject]:
        return [{"finish_reason": finish, "index": 0, "delta": delta}]

    # x_fake rides on the first chunk so it is seen even when a stream is cut short
    frames = [chunk(choice({"role": "assistant", "content": None}), x_fake=gen.x_fake)]
    frames += [chunk(choice({"content": piece})) for piece in gen.pieces]
    frames.append(chunk(choice({}, gen.finish_reason), x_fake=gen.x_fake))
    if include_usage:
        frames.append(chunk([], usage=gen.usage(), timings=gen.timings()))
    frames.append(sse("[DONE]"))
    return frames


# --- OpenAI legacy completions ----------------------------------------------------------


def completion_response(gen: Generation) -> JsonObject:
    return {
        "choices": [
            {"text": gen.text, "index": 0, "logprobs": None, "finish_reason": gen.finish_reason}
        ],
        "created": gen.created,
        "model": gen.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "object": "text_completion",
        "usage": gen.usage(),
        "id": f"cmpl-{gen.ident}",
        "timings": gen.timings(),
        "x_fake": gen.x_fake,
    }


def completion_stream(gen: Generation, include_usage: bool) -> list[bytes]:
    def chunk(text: str, finish: str | None, **extra: Any) -> bytes:
        return sse(
            {
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
                "created": gen.created,
                "model": gen.model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "object": "text_completion",
                "id": f"cmpl-{gen.ident}",
                **extra,
            }
        )

    frames = [
        chunk(piece, None, **({"x_fake": gen.x_fake} if number == 0 else {}))
        for number, piece in enumerate(gen.pieces)
    ]
    frames.append(chunk("", gen.finish_reason, x_fake=gen.x_fake))
    if include_usage:
        frames.append(
            sse(
                {
                    "choices": [],
                    "created": gen.created,
                    "model": gen.model,
                    "object": "text_completion",
                    "id": f"cmpl-{gen.ident}",
                    "usage": gen.usage(),
                }
            )
        )
    frames.append(sse("[DONE]"))
    return frames


# --- native /completion -----------------------------------------------------------------


def _native_final(gen: Generation, content: str) -> JsonObject:
    return {
        "content": content,
        "tokens": [],
        "id_slot": 0,
        "stop": True,
        "model": gen.model,
        "tokens_predicted": len(gen.pieces),
        "tokens_evaluated": gen.prompt_tokens,
        "stop_type": "limit" if gen.finish_reason == "length" else "eos",
        "stopping_word": "",
        "truncated": False,
        "timings": gen.timings(),
        "x_fake": gen.x_fake,
    }


def native_response(gen: Generation) -> JsonObject:
    return _native_final(gen, gen.text)


def native_stream(gen: Generation) -> list[bytes]:
    # the native endpoint streams bare objects and, unlike the OpenAI ones, sends no [DONE]
    frames = [
        sse(
            {
                "index": 0,
                "content": piece,
                "tokens": tokenize(piece),
                "stop": False,
                "id_slot": 0,
                "tokens_predicted": number + 1,
                "tokens_evaluated": gen.prompt_tokens,
            }
        )
        for number, piece in enumerate(gen.pieces)
    ]
    frames.append(sse(_native_final(gen, "")))
    return frames


# --- Anthropic /v1/messages ---------------------------------------------------------------


def _anthropic_stop(gen: Generation) -> str:
    return "max_tokens" if gen.finish_reason == "length" else "end_turn"


def messages_response(gen: Generation) -> JsonObject:
    return {
        "id": f"msg_{gen.ident}",
        "type": "message",
        "role": "assistant",
        "model": gen.model,
        "content": [{"type": "text", "text": gen.text}],
        "stop_reason": _anthropic_stop(gen),
        "stop_sequence": None,
        "usage": {"input_tokens": gen.prompt_tokens, "output_tokens": len(gen.pieces)},
        "x_fake": gen.x_fake,
    }


def messages_stream(gen: Generation) -> list[bytes]:
    start = {
        "type": "message_start",
        "message": {
            "id": f"msg_{gen.ident}",
            "type": "message",
            "role": "assistant",
            "model": gen.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": gen.prompt_tokens, "output_tokens": 0},
        },
        "x_fake": gen.x_fake,
    }
    frames = [
        sse(start, "message_start"),
        sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
    ]
    frames += [
        sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            },
            "content_block_delta",
        )
        for piece in gen.pieces
    ]
    frames.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    frames.append(
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": _anthropic_stop(gen), "stop_sequence": None},
                "usage": {"output_tokens": len(gen.pieces)},
            },
            "message_delta",
        )
    )
    frames.append(sse({"type": "message_stop"}, "message_stop"))
    return frames


# --- embeddings, models, metrics ----------------------------------------------------------


def embedding_vector(text: str, dims: int = 8) -> list[float]:
    """A deterministic unit-ish vector derived from the text, so equal inputs compare equal."""
    seed = sum(text.encode("utf-8")) + len(text)
    return [((seed * (i + 7)) % 97) / 97.0 for i in range(dims)]


def embeddings_response(
    inputs: list[str], model: str, encoding: str, x_fake: JsonObject
) -> JsonObject:
    data: list[JsonObject] = []
    for index, text in enumerate(inputs):
        vector = embedding_vector(text)
        encoded: list[float] | str = vector
        if encoding == "base64":
            # the openai client asks for base64 little-endian float32 by default
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(len(tokenize(text)) for text in inputs)
    return {
        "model": model,
        "object": "list",
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "data": data,
        "x_fake": x_fake,
    }


def models_response(model_id: str, aliases: list[str], model_path: str, created: int) -> JsonObject:
    return {
        "models": [
            {"name": model_id, "model": model_id, "type": "model", "capabilities": ["completion"]}
        ],
        "object": "list",
        "data": [
            {
                "id": model_id,
                "aliases": aliases or [model_id],
                "tags": [],
                "object": "model",
                "created": created,
                "owned_by": "llamacpp",
                "meta": {"n_ctx": 2048, "n_ctx_train": 2048, "fake_model_path": model_path},
            }
        ],
    }


def metrics_text(counters: dict[str, float], gauges: dict[str, float]) -> str:
    lines: list[str] = []
    for kind, items in (("counter", counters), ("gauge", gauges)):
        for name, value in items.items():
            lines += [
                f"# HELP llamacpp:{name} fake llama-server {kind}",
                f"# TYPE llamacpp:{name} {kind}",
                f"llamacpp:{name} {value:g}",
            ]
    return "\n".join(lines) + "\n"
