"""Scheduling under contention: four workload traces replayed through three policies.

Policies, in one run on the same traces (a virtual clock, the real planner):
  fifo-swap  llama-swap's swap-on-arrival: a request for a model that is not loaded swaps it
             in, one swap at a time in arrival order, evicting the least recently used model
             once its requests in flight are done;
  before     llamasup's planner before contention-aware scheduling (no max_wait: a waiting
             model gets room only when a sidecar happens to be idle);
  llamasup   the planner with the defaults of ``server.scheduling`` (max_wait 3 s, automatic
             minimum residency and linger, aging one priority step per max_wait).

Traces (2 sidecars fit, except where noted), each at several model load times:
  agentic     orchestrator (priority 10) + 2 explorers sharing a model + a coder: 3 models,
              closed loops (work, then think time, then the next request);
  ABAACABC    the pattern A B A A C A B C, 10 times, one request every 0.2 s; 1 sidecar fits;
  burst       200 requests at t=0 over 3 models, 4 slots each;
  saturation  a and b never idle (open loop, 2-3 requests in flight each), c every 15 s.

Usage: ``python bench/bench_scheduling.py [--loads 0.5,5,30] [--markdown]``
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from llamasup.core import defaults
from llamasup.planner.types import Limits, Scheduling
from llamasup.testing.schedsim import (
    Agent,
    Arrival,
    FifoPolicy,
    PlannerPolicy,
    Policy,
    Request,
    SimModel,
    SimResult,
    Simulation,
    quantile,
)

Trace = Callable[[float], tuple[list[SimModel], list[Arrival], list[Agent], int]]


def agentic(load: float) -> tuple[list[SimModel], list[Arrival], list[Agent], int]:
    models = [
        SimModel("orch", load, slots=1, priority=10),
        SimModel("explore", load, slots=2),
        SimModel("code", load, slots=1),
    ]
    agents = [
        Agent("orchestrator", ("orch",), work=2.0, think=1.0, count=60),
        Agent("explorer1", ("explore",), work=1.0, think=0.5, count=120, start=0.3),
        Agent("explorer2", ("explore",), work=1.0, think=0.5, count=120, start=0.6),
        Agent("coder", ("code",), work=3.0, think=2.0, count=40, start=1.0),
    ]
    return models, [], agents, 2


def interleaved(load: float) -> tuple[list[SimModel], list[Arrival], list[Agent], int]:
    models = [SimModel(name, load, slots=1) for name in "ABC"]
    pattern = "ABAACABC" * 10
    arrivals = [Arrival(i * 0.2, name, 1.0) for i, name in enumerate(pattern)]
    return models, arrivals, [], 1


def burst(load: float) -> tuple[list[SimModel], list[Arrival], list[Agent], int]:
    models = [SimModel(name, load, slots=4) for name in ("a", "b", "c")]
    arrivals = [Arrival(0.0, ("a", "b", "c")[i % 3], 1.0) for i in range(200)]
    return models, arrivals, [], 2


def saturation(load: float) -> tuple[list[SimModel], list[Arrival], list[Agent], int]:
    models = [SimModel(name, load, slots=4) for name in ("a", "b", "c")]
    arrivals: list[Arrival] = []
    t = 0.0
    while t < 300:  # 4 slots, 1 s of work every 0.4 s: 2-3 in flight, never idle
        arrivals += [Arrival(t, "a", 1.0), Arrival(t + 0.2, "b", 1.0)]
        t += 0.4
    arrivals += [Arrival(i * 15.0, "c", 1.0) for i in range(1, 20)]
    return models, arrivals, [], 2


TRACES: dict[str, Trace] = {
    "agentic": agentic,
    "ABAACABC": interleaved,
    "burst": burst,
    "saturation": saturation,
}


def policies(max_sidecars: int) -> list[Policy]:
    tuned = Scheduling(max_wait=defaults.MAX_WAIT, aging=defaults.MAX_WAIT)
    return [
        FifoPolicy(),
        PlannerPolicy("before", Limits(max_sidecars=max_sidecars)),
        PlannerPolicy("llamasup", Limits(max_sidecars=max_sidecars, scheduling=tuned)),
    ]


def bound_for(models: dict[str, SimModel]) -> Callable[[Request], float]:
    """max_wait + one load + one request: the bound the issue states for a lone contender."""

    def bound(request: Request) -> float:
        return defaults.MAX_WAIT + models[request.model].load_time + request.work

    return bound


def run(trace: Trace, load: float) -> list[tuple[SimResult, SimModel | None, int]]:
    rows: list[tuple[SimResult, SimModel | None, int]] = []
    _, _, _, slots = trace(load)
    for policy in policies(slots):
        models, arrivals, agents, slots = trace(load)
        sim = Simulation(models, slots, policy)
        sim.add(arrivals)
        sim.add_agents(agents)
        result = sim.run()
        over = result.over(bound_for(sim.models))
        assert sim.peak_running <= slots, f"{policy.name} ran {sim.peak_running} > {slots}"
        rows.append((result, None, over))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", default="0.5,5,30", help="model load times, seconds")
    args = parser.parse_args()
    loads = [float(x) for x in args.loads.split(",")]
    print(
        "| trace | load | policy | requests | makespan | swaps | wait p50 | p95 | max "
        "| over bound | aborted | unserved |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, trace in TRACES.items():
        for load in loads:
            for result, _, over in run(trace, load):
                waits = result.waits()
                print(
                    f"| {name} | {load:g} s | {result.policy} | {len(result.requests)} "
                    f"| {result.makespan:.0f} s | {result.swaps} "
                    f"| {quantile(waits, 0.5):.1f} | {quantile(waits, 0.95):.1f} "
                    f"| {max(waits, default=0):.1f} | {over} | {result.aborted} "
                    f"| {result.unserved} |"
                )
    print()
    print("Per-model waits (p95 / max, seconds), saturation trace:")
    for load in loads:
        for result, _, _ in run(saturation, load):
            per = ", ".join(
                f"{m} {quantile(result.waits(m), 0.95):.1f}/{max(result.waits(m), default=0):.1f}"
                for m in ("a", "b", "c")
            )
            print(f"- load {load:g} s, {result.policy}: {per}")


if __name__ == "__main__":
    main()
