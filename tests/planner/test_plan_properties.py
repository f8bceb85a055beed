"""Property tests of the planner's invariants over random worlds."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from llamasup.planner.plan import plan
from llamasup.planner.types import (
    RUNNING_STATES,
    Demand,
    Have,
    HaveState,
    Limits,
    Plan,
    Refuse,
    Scheduling,
    Start,
    Stop,
    Wait,
    Want,
)

GIB = 1 << 30
KEYS = [f"k{i}" for i in range(8)]
MODELS = ["m0", "m1", "m2", "m3"]
GROUPS = [None, None, "g", "h"]
STATES: list[HaveState] = [
    "starting",
    "ready",
    "ready",
    "backoff",
    "stopping",
    "stopped",
    "failed",
]

memories = st.one_of(st.none(), st.integers(0, 6).map(lambda n: n * GIB))
demands = st.one_of(
    st.none(),
    st.builds(
        Demand,
        waiting=st.integers(1, 3),
        since=st.integers(0, 50).map(float),
        priority=st.sampled_from([0, 0, 1, 5]),
    ),
)


@st.composite
def wants(draw: st.DrawFn) -> list[Want]:
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=len(KEYS)))
    made: list[Want] = []
    for key in keys:
        # a request's ad-hoc flags make a key that is never pinned or preloaded
        transient = draw(st.sampled_from([False, False, False, True]))
        made.append(
            Want(
                key=key,
                model=draw(st.sampled_from(MODELS)),
                memory=draw(memories),
                pinned=not transient and draw(st.sampled_from([False, False, False, True])),
                preload=not transient and draw(st.booleans()),
                ttl=draw(st.one_of(st.none(), st.integers(1, 100).map(float))),
                group=draw(st.sampled_from(GROUPS)),
                demand=draw(demands),
                priority=draw(st.sampled_from([0, 0, 1, 5])),
                transient=transient,
            )
        )
        made[-1] = replace(made[-1], devices=draw(splits(made[-1].memory)))
    return made


def splits(memory: int | None) -> st.SearchStrategy[dict[str, int] | None]:
    """None (all on the host), or a partial offload of ``memory`` to one GPU."""
    if not memory:
        return st.none()
    return st.one_of(
        st.none(),
        st.integers(0, 4).map(
            lambda quarters: {
                "CUDA0": memory * quarters // 4,
                "host": memory - memory * quarters // 4,
            }
        ),
    )


@st.composite
def haves(draw: st.DrawFn) -> list[Have]:
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=len(KEYS)))
    observed = [
        Have(
            key=key,
            model=draw(st.sampled_from(MODELS)),
            state=draw(st.sampled_from(STATES)),
            in_flight=draw(st.sampled_from([0, 0, 1, 2])),
            last_used=float(draw(st.integers(0, 100))),
            memory=draw(memories),
            pinned=draw(st.booleans()),
            group=draw(st.sampled_from(GROUPS)),
            failure="start limit reached",
            ready_at=draw(st.one_of(st.none(), st.integers(0, 100).map(float))),
            load_time=draw(st.one_of(st.none(), st.sampled_from([0.1, 2.0, 30.0]))),
            keep_until=draw(st.one_of(st.none(), st.integers(0, 200).map(float))),
        )
        for key in keys
    ]
    return [replace(have, devices=draw(splits(have.memory))) for have in observed]


schedulings = st.one_of(
    st.just(Scheduling()),  # the legacy policy: never drain for a demand
    st.builds(
        Scheduling,
        max_wait=st.sampled_from([0.0, 3.0, 10.0]),
        min_resident=st.one_of(st.none(), st.sampled_from([0.0, 5.0])),
        aging=st.one_of(st.none(), st.sampled_from([1.0, 10.0])),
        linger=st.one_of(st.none(), st.sampled_from([0.0, 5.0])),
    ),
)
limits_st = st.builds(
    Limits,
    max_sidecars=st.one_of(st.none(), st.integers(0, 5)),
    memory_budget=st.one_of(st.none(), st.integers(0, 14).map(lambda n: n * GIB)),
    groups=st.fixed_dictionaries({"g": st.integers(1, 2)}),
    scheduling=schedulings,
    device_budgets=st.one_of(
        st.just({}),
        st.fixed_dictionaries(
            {
                "CUDA0": st.integers(0, 8).map(lambda n: n * GIB),
                "host": st.integers(0, 12).map(lambda n: n * GIB),
            }
        ),
    ),
)
nows = st.integers(0, 200).map(float)


def _memory(have: Have, want: Want | None) -> int:
    if have.memory is not None:
        return have.memory
    return (want.memory if want is not None else None) or 0


def _after(
    result: Plan, desired: list[Want], observed: list[Have]
) -> tuple[int, int, dict[str, int], dict[str, int]]:
    """Count, memory, group members and memory per device held once the plan is done."""
    wanted = {w.key: w for w in desired}
    freed = {s.key for s in result.stops if s.in_flight == 0}
    count, memory = 0, 0
    groups: dict[str, int] = {}
    devices: dict[str, int] = {}

    def place(amount: int, split: dict[str, int] | None) -> None:
        for device, part in (split or {"host": amount}).items():
            devices[device] = devices.get(device, 0) + part

    for have in observed:
        if have.key in freed or (have.state not in RUNNING_STATES and have.state != "stopping"):
            continue
        want = wanted.get(have.key)
        group = want.group if want is not None else have.group
        count += 1
        memory += _memory(have, want)
        split = have.devices or (want.devices if want is not None else None)
        place(_memory(have, want), dict(split) if split else None)
        if group is not None:
            groups[group] = groups.get(group, 0) + 1
    for start in result.starts:
        want = wanted[start.key]
        count += 1
        memory += want.memory or 0
        place(want.memory or 0, dict(want.devices) if want.devices else None)
        if want.group is not None:
            groups[want.group] = groups.get(want.group, 0) + 1
    return count, memory, groups, devices


@settings(max_examples=400, deadline=None)
@given(wants(), haves(), limits_st, nows)
def test_invariants(desired: list[Want], observed: list[Have], limits: Limits, now: float) -> None:
    result = plan(desired, observed, limits, now)
    wanted = {w.key: w for w in desired}
    seen = {h.key: h for h in observed}

    order = [0 if isinstance(a, Stop) else 1 if isinstance(a, Start) else 2 for a in result.actions]
    assert order == sorted(order), "stops, then starts, then waits and refusals"
    keys = [a.key for a in result.actions]
    assert len(keys) == len(set(keys)), "one action per key"

    for stop in result.stops:
        want = wanted.get(stop.key)
        assert want is None or not want.pinned, "a desired pinned sidecar is never stopped"
        if stop.reason not in ("changed", "removed", "unloaded"):
            assert not stop.bounded, "a swap never cuts a request in flight"
        if stop.reason in ("evicted-lru", "evicted-memory", "idle-ttl"):
            assert seen[stop.key].in_flight == 0, "never evicts a busy sidecar"
            assert want is not None and want.demand is None, "never evicts a demanded one"
        if stop.reason == "group":
            assert want is not None and want.demand is None and stop.drain
        if stop.reason in ("evicted-lru", "evicted-memory"):
            keep = seen[stop.key].keep_until
            assert keep is None or keep <= now, "a kept sidecar is only ever drained"
        if stop.reason == "contention":
            # a drain for a demand that waited max_wait: it finishes its requests first
            max_wait = limits.scheduling.max_wait
            assert max_wait is not None and stop.drain
            assert want is None or not want.pinned
            assert want is None or want.demand is None, "its own waiting requests came first"
            assert any(
                w.demand is not None and now - w.demand.since >= max_wait for w in desired
            ), "only a demand that waited max_wait drains"
        if stop.reason == "keep-alive":
            kept = seen[stop.key]
            assert kept.in_flight == 0 and kept.keep_until is not None
            assert kept.keep_until <= now

    for start in result.starts:
        want = wanted[start.key]
        have = seen.get(start.key)
        assert have is None or have.state == "stopped"
        assert want.pinned or want.demand is not None or (want.preload and have is None)

    if result.starts:
        count, memory, groups, devices = _after(result, desired, observed)
        for device, budget in limits.device_budgets.items():
            assert devices.get(device, 0) <= budget, f"{device} over its budget"
        if limits.max_sidecars is not None:
            assert count <= limits.max_sidecars
        if limits.memory_budget is not None:
            assert memory <= limits.memory_budget
        for start in result.starts:
            group = wanted[start.key].group
            if group is not None:
                assert groups[group] <= limits.group_limit(group)

    for action in result.actions:
        if isinstance(action, Wait | Refuse):
            assert action.key in wanted


@settings(max_examples=150, deadline=None)
@given(wants(), haves(), limits_st, nows, st.randoms(use_true_random=False))
def test_same_world_in_any_order_gives_the_same_plan(
    desired: list[Want],
    observed: list[Have],
    limits: Limits,
    now: float,
    rng: random.Random,
) -> None:
    reference = plan(desired, observed, limits, now)
    rng.shuffle(desired)
    rng.shuffle(observed)
    assert plan(desired, observed, limits, now) == reference


def _apply(result: Plan, observed: list[Have], now: float) -> list[Have]:
    """The world once the executor has carried the plan out (busy drains still stopping)."""
    stopped = {s.key: s for s in result.stops}
    world: list[Have] = []
    for have in observed:
        stop = stopped.get(have.key)
        if stop is None:
            world.append(have)
        elif have.state in RUNNING_STATES and stop.in_flight > 0:
            world.append(replace(have, state="stopping"))
        elif have.key in {w.key for w in result.waits} or stop.reason != "removed":
            world.append(replace(have, state="stopped", in_flight=0))
    for start in result.starts:
        world = [h for h in world if h.key != start.key]
        world.append(Have(start.key, f"model-of-{start.key}", "starting", last_used=now))
    return world


@settings(max_examples=300, deadline=None)
@given(wants(), haves(), limits_st, nows)
def test_a_second_pass_does_not_undo_the_first(
    desired: list[Want], observed: list[Have], limits: Limits, now: float
) -> None:
    first = plan(desired, observed, limits, now)
    wanted = {w.key: w for w in desired}
    world = [
        replace(h, model=wanted[h.key].model) if h.key in wanted else h
        for h in _apply(first, observed, now)
    ]
    second = plan(desired, world, limits, now)
    started = {s.key for s in first.starts}
    assert not started & {s.key for s in second.stops}, "a fresh start is stopped again"
    assert not started & {s.key for s in second.starts}, "started twice"
