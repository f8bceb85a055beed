"""One cell of a bench: ``concurrency`` requests at once, each ``prompt_tokens`` in and
``gen_tokens`` out, streamed from llama-server's native ``/completion``.

Prompts are token ids cut from a tokenized text and rotated differently for every request,
with ``cache_prompt: false``: no request reuses another's prompt cache, so prompt speed is
prompt processing, not a cache hit. ``ignore_eos`` makes every request generate exactly
``gen_tokens``. Speeds come from llama-server's ``timings``; the wall clock checks them
(time to first token, end-to-end latency, generation rate between first and last token).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from llamasup.harness.session import Endpoint

#: a plain-English word list for the synthetic prompt (deterministic; any text would do)
_WORDS_TEXT = (
    "the of and to in is was for on that with as by at from his her they this which an be "
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend "
    "father power hour game line end member law car city community name president team "
    "minute idea kid body information back parent face others level office door health "
    "person art war history party result change morning reason research girl guy moment air "
    "teacher force"
)

SYNTHETIC_PROMPT = "synthetic-words-v1"


def synthetic_text(words: int, seed: int = 0) -> str:
    rng = random.Random(seed)  # noqa: S311 - filler text, not a secret
    words_list = _WORDS_TEXT.split()
    return " ".join(rng.choice(words_list) for _ in range(words))


@dataclass(frozen=True)
class Cell:
    """The parameters of one measurement."""

    prompt_tokens: int
    gen_tokens: int
    concurrency: int

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "gen_tokens": self.gen_tokens,
            "concurrency": self.concurrency,
        }


class CellError(Exception):
    """A request of the cell failed (the message is llama-server's or the client's)."""


async def tokenize(client: httpx.AsyncClient, endpoint: Endpoint, text: str) -> list[int]:
    body = {**_model_field(endpoint), "content": text, "add_special": False}
    response = await client.post(f"{endpoint.url}/tokenize", json=body, headers=endpoint.headers)
    if response.status_code != 200:
        raise CellError(f"/tokenize: HTTP {response.status_code}: {response.text[:300]}")
    tokens = response.json().get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        raise CellError("/tokenize: no token list in the answer")
    return tokens


async def prompt_pool(
    client: httpx.AsyncClient, endpoint: Endpoint, longest: int, text: str | None
) -> list[int]:
    """At least ``longest`` + 64 token ids of ``text`` (repeated as needed; default: words)."""
    source = text if text else synthetic_text(max(64, longest))
    body = source
    for _ in range(20):
        tokens = await tokenize(client, endpoint, body)
        if len(tokens) >= longest + 64:
            return tokens
        body = f"{body}\n{source}"
    raise CellError(f"the prompt text does not make {longest} tokens")


def request_prompt(pool: Sequence[int], length: int, salt: str) -> list[int]:
    """``length`` ids of ``pool``, rotated by an offset derived from ``salt`` (per request)."""
    offset = random.Random(salt).randrange(len(pool))  # noqa: S311 - not a secret
    rotated = [*pool[offset:], *pool[:offset]]
    return rotated[:length]


async def one_request(
    client: httpx.AsyncClient, endpoint: Endpoint, prompt: list[int], gen_tokens: int
) -> dict[str, Any]:
    """Stream one completion; its wall-clock times and llama-server's ``timings``."""
    body = {
        **endpoint.fields,
        "prompt": prompt,
        "n_predict": gen_tokens,
        "ignore_eos": True,
        "cache_prompt": False,
        "stream": True,
    }
    start = time.perf_counter()
    first: float | None = None
    final: Mapping[str, Any] | None = None
    async with client.stream(
        "POST", f"{endpoint.url}/completion", json=body, headers=endpoint.headers
    ) as response:
        if response.status_code != 200:
            text = (await response.aread()).decode("utf-8", "replace")
            raise CellError(f"/completion: HTTP {response.status_code}: {_message(text)}")
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = json.loads(line[6:])
            if "error" in data:
                raise CellError(f"/completion: {_message(json.dumps(data))}")
            if first is None and not data.get("stop"):
                first = time.perf_counter()
            if data.get("stop"):
                final = data
    end = time.perf_counter()
    timings = (final or {}).get("timings") or {}
    if not timings:
        raise CellError("/completion: the stream ended without timings")
    gen_n = int(timings.get("predicted_n", 0))
    first = end if first is None else first  # no token streamed: the answer was its end
    measured: dict[str, Any] = {
        "ttft": first - start,
        "latency": end - start,
        "prompt_n": int(timings.get("prompt_n", 0)),
        "prompt_tps": _rate(timings.get("prompt_n"), timings.get("prompt_ms")),
        "gen_n": gen_n,
        "gen_tps": _rate(gen_n, timings.get("predicted_ms")),
        "gen_tps_wall": (gen_n - 1) / (end - first) if gen_n > 1 and end > first else None,
    }
    if "draft_n" in timings:
        measured["draft_n"] = timings.get("draft_n")
        measured["draft_accepted"] = timings.get("draft_n_accepted")
    return measured


async def run_cell(
    client: httpx.AsyncClient, endpoint: Endpoint, cell: Cell, pool: Sequence[int], salt: str
) -> dict[str, Any]:
    """``cell.concurrency`` requests at once; medians over them and the batch's throughput."""
    prompts = [
        request_prompt(pool, cell.prompt_tokens, f"{salt}/{n}") for n in range(cell.concurrency)
    ]
    start = time.perf_counter()
    requests = await asyncio.gather(
        *(one_request(client, endpoint, p, cell.gen_tokens) for p in prompts)
    )
    wall = time.perf_counter() - start
    generated = sum(r["gen_n"] for r in requests)
    processed = sum(r["prompt_n"] for r in requests)
    result: dict[str, Any] = {
        "wall": wall,
        "throughput": generated / wall if wall > 0 else None,
        "throughput_total": (generated + processed) / wall if wall > 0 else None,
        "requests": [_rounded(r) for r in requests],
    }
    for name in ("ttft", "latency", "prompt_tps", "gen_tps", "gen_tps_wall"):
        values = [r[name] for r in requests if r.get(name) is not None]
        result[name] = statistics.median(values) if values else None
    drafted = [r for r in requests if r.get("draft_n")]
    if drafted:
        accepted = sum(int(r.get("draft_accepted") or 0) for r in drafted)
        result["draft_acceptance"] = accepted / sum(int(r["draft_n"]) for r in drafted)
    return _rounded(result)


def _rate(count: object, millis: object) -> float | None:
    if not isinstance(count, (int, float)) or not isinstance(millis, (int, float)) or millis <= 0:
        return None
    return float(count) * 1000.0 / float(millis)


def _model_field(endpoint: Endpoint) -> dict[str, Any]:
    model = endpoint.fields.get("model")
    return {} if model is None else {"model": model}


def _message(text: str) -> str:
    try:
        data = json.loads(text)
        error = data.get("error", data)
        return str(error.get("message", error) if isinstance(error, dict) else error)[:300]
    except (ValueError, AttributeError):
        return text[:300]


def _rounded(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in values.items()}
