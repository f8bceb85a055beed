"""How long one ``plan()`` takes for a large profile set: 500 models x 50 agents, 100 running.

Run: ``python bench/bench_plan.py [--iterations N] [--load-time-agents K]``.

The desired set is what the reconciler builds: one Want per distinct sidecar key. Agents that
only change request-time flags share their model's base key; agents that change load-time
flags (cache type, context size...) get a key of their own. So a model contributes
``1 + load_time_agents`` keys. The observed set holds 100 sidecars in a mix of states, some of
them busy, a few no longer desired; a handful of keys have waiting demands, some are pinned or
preload, some are in exclusive groups, and the limits are tight enough that evictions, waits
and refusals all happen.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

from llamasup.planner.plan import plan
from llamasup.planner.types import Demand, Have, Limits, Want

GIB = 1 << 30
MODELS = 500
AGENTS = 50
RUNNING = 100
NOW = 100_000.0


def build_world(load_time_agents: int, seed: int = 1) -> tuple[list[Want], list[Have], Limits]:
    rng = random.Random(seed)
    desired: list[Want] = []
    for m in range(MODELS):
        model = f"org/model-{m:03d}-GGUF"
        memory = rng.choice([1, 2, 4, 5, 8, 14]) * GIB
        group = f"big-{m % 4}" if memory >= 8 * GIB else None
        for a in range(1 + load_time_agents):
            # load-time overlays change the KV cache, so their memory differs a little
            desired.append(
                Want(
                    key=f"{m:03d}-{a:02d}-{rng.getrandbits(32):08x}",
                    model=model,
                    memory=memory + a * 64 * (1 << 20) if rng.random() > 0.01 else None,
                    pinned=m < 3 and a == 0,
                    preload=3 <= m < 8 and a == 0,
                    ttl=600.0 if m % 5 else None,
                    group=group,
                )
            )
    rng.shuffle(desired)
    running = rng.sample(desired, RUNNING)
    observed: list[Have] = []
    for i, want in enumerate(running):
        state = "ready" if i % 10 else rng.choice(["starting", "stopping", "backoff"])
        observed.append(
            Have(
                key=want.key,
                model=want.model,
                state=state,  # type: ignore[arg-type]
                in_flight=rng.choice([0, 0, 0, 1, 2]),
                last_used=NOW - rng.uniform(0, 1200),
                memory=want.memory,
                group=want.group,
            )
        )
    # profile changes since those started: five keys are gone (their models remain)
    for i in range(5):
        observed[i] = Have(
            key=f"stale-{i}",
            model=observed[i].model,
            state="ready",
            last_used=NOW - 10,
            memory=4 * GIB,
        )
    # twenty keys that are not running have requests waiting
    idle_keys = {h.key for h in observed}
    waiting = [w for w in desired if w.key not in idle_keys][:20]
    demanded = {w.key: Demand(waiting=1 + i % 3, since=NOW - 30 + i) for i, w in enumerate(waiting)}
    desired = [
        Want(w.key, w.model, w.memory, w.pinned, w.preload, w.ttl, w.group, demanded[w.key])
        if w.key in demanded
        else w
        for w in desired
    ]
    limits = Limits(max_sidecars=100, memory_budget=420 * GIB, groups={"big-0": 2})
    return desired, observed, limits


def measure(load_time_agents: int, iterations: int, *, mapping: bool) -> dict[str, float]:
    wants, observed, limits = build_world(load_time_agents)
    # the reconciler may keep its desired set as a key -> Want mapping between passes
    desired: list[Want] | dict[str, Want] = {w.key: w for w in wants} if mapping else wants
    result = plan(desired, observed, limits, NOW)
    for _ in range(5):
        plan(desired, observed, limits, NOW)
    samples: list[float] = []
    for _ in range(iterations):
        started = time.perf_counter_ns()
        plan(desired, observed, limits, NOW)
        samples.append((time.perf_counter_ns() - started) / 1e6)
    samples.sort()
    return {
        "wants": len(wants),
        "haves": len(observed),
        "stops": len(result.stops),
        "starts": len(result.starts),
        "waits": len(result.waits),
        "refusals": len(result.refusals),
        "min_ms": samples[0],
        "median_ms": statistics.median(samples),
        "p95_ms": samples[int(0.95 * (len(samples) - 1))],
        "max_ms": samples[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument(
        "--load-time-agents",
        type=int,
        action="append",
        help="agents per model with load-time flags (default: 10 and 50)",
    )
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, {args.iterations} runs")
    columns = ["keys/model", "desired as", "wants", "running", "stops", "starts", "waits"]
    columns += ["refused", "min", "median", "p95", "max"]
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for agents in args.load_time_agents or [10, AGENTS]:
        for mapping in (False, True):
            r = measure(agents, args.iterations, mapping=mapping)
            print(
                f"| {1 + agents} | {'mapping' if mapping else 'list'} | {r['wants']:.0f} "
                f"| {r['haves']:.0f} | {r['stops']:.0f} | {r['starts']:.0f} | {r['waits']:.0f} "
                f"| {r['refusals']:.0f} | {r['min_ms']:.2f} ms | {r['median_ms']:.2f} ms "
                f"| {r['p95_ms']:.2f} ms | {r['max_ms']:.2f} ms |"
            )


if __name__ == "__main__":
    main()
