"""The bench loop: variant by variant (one sidecar at a time unless ``keep_loaded``), cell by
cell, each finished cell written to the result log before the next starts.

A cell's key is (llama-server build, model file identity, target and flags, parameters,
prompt source, repeat number): a resumed run skips every cell whose key is in the log, so a
run killed at any moment loses at most the cell in flight and measures nothing twice.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from llamasup.bench.measure import (
    SYNTHETIC_PROMPT,
    Cell,
    CellError,
    one_request,
    prompt_pool,
    request_prompt,
    run_cell,
)
from llamasup.errors import LlamasupError
from llamasup.harness.identity import load_average, process_memory
from llamasup.harness.progress import Progress
from llamasup.harness.records import ResultLog, record_key
from llamasup.harness.session import Session, variant_identity
from llamasup.harness.targets import Variant

#: the untimed request(s) after a load: first-touch page faults and lazy init are not speed
WARMUP_PROMPT, WARMUP_GEN = 16, 4


@dataclass(frozen=True)
class BenchPlan:
    variants: Sequence[Variant]
    cells: Sequence[Cell]
    repeat: int = 3
    warmup: int = 1
    #: the prompt text (None: synthetic words) and its name in the keys
    prompt_text: str | None = None
    keep_loaded: bool = False

    @property
    def prompt_source(self) -> str:
        if self.prompt_text is None:
            return SYNTHETIC_PROMPT
        return "text-" + hashlib.sha256(self.prompt_text.encode()).hexdigest()[:12]

    def units(self) -> list[tuple[Cell, int]]:
        return [(cell, r) for cell in self.cells for r in range(self.repeat)]


def cell_key(identity: dict[str, Any], plan: BenchPlan, cell: Cell, repeat: int) -> str:
    return record_key(
        {**identity, "params": cell.as_dict(), "prompt": plan.prompt_source, "repeat": repeat}
    )


def identities(session: Session, plan: BenchPlan) -> dict[Variant, dict[str, Any]]:
    """Every variant's identity; resolving them all first fails fast on a bad target."""
    return {variant: variant_identity(session, variant) for variant in plan.variants}


def pending_units(plan: BenchPlan, log: ResultLog, known: dict[Variant, dict[str, Any]]) -> int:
    return sum(
        not log.done(cell_key(known[v], plan, cell, r))
        for v in plan.variants
        for cell, r in plan.units()
    )


async def run_bench(
    session: Session,
    plan: BenchPlan,
    log: ResultLog,
    known: dict[Variant, dict[str, Any]],
    progress: Progress | None = None,
) -> None:
    """Measure every cell of ``plan`` not yet in ``log``, appending each as it finishes."""
    for variant in plan.variants:
        identity = known[variant]
        pending = [
            (cell, r) for cell, r in plan.units() if not log.done(cell_key(identity, plan, cell, r))
        ]
        if not pending:
            continue
        if progress is not None:
            progress.note(variant.name)
        finished: list[int] = []

        def tick(finished: list[int] = finished) -> None:
            finished.append(1)
            if progress is not None:
                progress.advance()

        try:
            await _variant(
                session, plan=plan, log=log, what=(variant, identity), pending=pending, tick=tick
            )
        except (LlamasupError, TimeoutError, httpx.HTTPError, CellError) as exc:
            # a variant that cannot start (a flag this model refuses) or dies: its cells
            # stay pending for a resume; the others go on
            log.append(_failure(identity, variant, exc))
            if progress is not None:
                progress.write(f"{variant.name}: failed: {exc}")
        finally:
            if progress is not None:
                progress.advance(len(pending) - len(finished))
            if not plan.keep_loaded:
                await session.release(variant)


async def _variant(
    session: Session,
    *,
    plan: BenchPlan,
    log: ResultLog,
    what: tuple[Variant, dict[str, Any]],
    pending: Sequence[tuple[Cell, int]],
    tick: Callable[[], None],
) -> None:
    """Load ``variant``, then measure its pending cells, calling ``tick`` after each."""
    variant, identity = what
    # a connection per request: llama-server may close one after a streamed answer, and a
    # pooled connection closed under the client fails the next request ("Server
    # disconnected"); a loopback connect costs well under a millisecond
    limits = httpx.Limits(max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits, trust_env=False) as client,
        session.use(variant) as endpoint,
    ):
        longest = max(cell.prompt_tokens for cell, _ in pending)
        pool = await prompt_pool(client, endpoint, max(longest, WARMUP_PROMPT), plan.prompt_text)
        # after a first request: through a running llamasup, that is what starts it
        process = await session.process(variant)
        pid = process.pid if process is not None else None
        log.append(
            {
                "kind": "load",
                "identity": identity,
                "variant": variant.as_dict(),
                "load_seconds": None if process is None else _round(process.load_seconds),
                "memory_estimate": None if process is None else process.memory_estimate,
                **process_memory(pid),
                "loadavg": load_average(),
                "at": time.time(),
            }
        )
        for number in range(plan.warmup):
            prompt = request_prompt(pool, WARMUP_PROMPT, f"warmup/{number}")
            await one_request(client, endpoint, prompt, WARMUP_GEN)
        for cell, repeat in pending:
            key = cell_key(identity, plan, cell, repeat)
            loadavg = load_average()
            try:
                measured = await run_cell(client, endpoint, cell, pool, f"{key}/{repeat}")
            except CellError as exc:
                # llama-server refused the cell (a prompt over the context): shown, not
                # kept as done, so a resume with other flags tries it again
                log.append(
                    {
                        "kind": "cell-error",
                        "identity": identity,
                        "variant": variant.as_dict(),
                        "params": cell.as_dict(),
                        "repeat": repeat,
                        "error": str(exc),
                        "at": time.time(),
                    }
                )
            else:
                log.append(
                    {
                        "kind": "cell",
                        "key": key,
                        "identity": identity,
                        "variant": variant.as_dict(),
                        "params": cell.as_dict(),
                        "prompt": plan.prompt_source,
                        "repeat": repeat,
                        **measured,
                        **process_memory(pid),
                        "loadavg": loadavg,
                        "at": time.time(),
                    }
                )
            tick()


def _failure(identity: dict[str, Any], variant: Variant, exc: BaseException) -> dict[str, Any]:
    return {
        "kind": "variant-error",
        "identity": identity,
        "variant": variant.as_dict(),
        "error": str(exc) or type(exc).__name__,
        "at": time.time(),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
