"""Scheduling under contention, over time: the real planner in a simulation on a virtual clock.

Each property is checked on many random workloads: no request is ever cut by a swap, the
limits are never exceeded (processes that still exist count, stopping ones included), and no
request waits forever. A lone contender for two busy sidecars gets in within
``max_wait + one drain + one load``; before this scheduling it waited until a sidecar happened
to be idle, which under steady traffic is never.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from llamasup.core.units import GIB
from llamasup.planner.plan import plan
from llamasup.planner.types import Demand, Have, Limits, Scheduling, Want
from llamasup.testing.schedsim import (
    STOP_TIME,
    Agent,
    Arrival,
    PlannerPolicy,
    SimModel,
    Simulation,
)

NAMES = ("a", "b", "c", "d")


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[SimModel], list[Arrival], int, Scheduling]:
    count = draw(st.integers(2, 4))
    models = [
        SimModel(
            name,
            load_time=draw(st.sampled_from([0.05, 0.5, 3.0, 20.0])),
            slots=draw(st.integers(1, 3)),
            priority=draw(st.sampled_from([0, 0, 1])),
        )
        for name in NAMES[:count]
    ]
    arrivals = draw(
        st.lists(
            st.builds(
                Arrival,
                at=st.floats(0, 60, allow_nan=False),
                model=st.sampled_from(NAMES[:count]),
                work=st.sampled_from([0.1, 1.0, 4.0]),
                priority=st.one_of(st.none(), st.sampled_from([0, 2])),
            ),
            min_size=1,
            max_size=40,
        )
    )
    scheduling = Scheduling(
        max_wait=draw(st.sampled_from([0.0, 1.0, 3.0, 10.0])),
        min_resident=draw(st.one_of(st.none(), st.sampled_from([0.0, 5.0]))),
        aging=draw(st.one_of(st.none(), st.sampled_from([1.0, 5.0]))),
    )
    return models, arrivals, draw(st.integers(1, count - 1)), scheduling


@settings(max_examples=200, deadline=None)
@given(workloads())
def test_nothing_is_cut_limits_hold_and_every_request_is_served(
    workload: tuple[list[SimModel], list[Arrival], int, Scheduling],
) -> None:
    models, arrivals, slots, scheduling = workload
    sim = Simulation(models, slots, PlannerPolicy("llamasup", Limits(slots, None, {}, scheduling)))
    sim.add(arrivals)
    result = sim.run(until=100_000)
    assert result.aborted == 0, "a swap cut a request in flight"
    assert sim.peak_running <= slots, "more processes than max_sidecars at once"
    assert result.unserved == 0, "a request was never served"
    assert len(result.served) == len(arrivals)


def _busy_pair_and_a_contender(
    load: float, work: float, scheduling: Scheduling, first_c: float
) -> Simulation:
    """a and b never idle (closed loops, no think time, 2 each); c asks twice, 40 s apart."""
    models = [SimModel(name, load, slots=2) for name in ("a", "b", "c")]
    limits = Limits(max_sidecars=2, scheduling=scheduling)
    sim = Simulation(models, 2, PlannerPolicy("policy", limits))
    sim.add_agents(
        Agent(f"{name}{i}", (name,), work=work, think=0.0, count=10_000)
        for name in ("a", "b")
        for i in range(2)
    )
    sim.add([Arrival(first_c, "c", work), Arrival(first_c + 40, "c", work)])
    return sim


@settings(max_examples=60, deadline=None)
@given(
    load=st.sampled_from([0.05, 1.0, 5.0]),
    work=st.sampled_from([0.2, 1.0, 2.0]),
    max_wait=st.sampled_from([0.0, 2.0, 5.0]),
    offset=st.floats(0, 10, allow_nan=False),
)
def test_a_lone_contender_gets_in_within_max_wait_a_drain_and_a_load(
    load: float, work: float, max_wait: float, offset: float
) -> None:
    scheduling = Scheduling(max_wait=max_wait, aging=max_wait or None)
    # c comes once a and b have been resident longer than their minimum residency
    first_c = 2 * load + scheduling.residency(load) + offset
    sim = _busy_pair_and_a_contender(load, work, scheduling, first_c)
    result = sim.run(until=first_c + 200)
    waits = result.waits("c")
    assert len(waits) == 2
    # the drain waits for the requests in flight: at most one piece of work per slot
    bound = max_wait + work + STOP_TIME + load + 1e-6
    assert waits[0] <= bound, (waits, bound)
    assert result.aborted == 0


def test_before_contention_scheduling_the_contender_starves() -> None:
    sim = _busy_pair_and_a_contender(1.0, 1.0, Scheduling(), first_c=5.0)
    result = sim.run(until=300)
    assert result.waits("c") == [], "without max_wait c never gets in while a and b are busy"
    fixed = _busy_pair_and_a_contender(1.0, 1.0, Scheduling(max_wait=3.0), first_c=5.0)
    assert len(fixed.run(until=300).waits("c")) == 2


# -- single decisions ------------------------------------------------------------------------

ON = Scheduling(max_wait=3.0, aging=3.0)
ONE = Limits(max_sidecars=1, scheduling=ON)


def _busy(key: str, *, ready_at: float = 0.0, load_time: float | None = None) -> Have:
    return Have(
        key, key, "ready", in_flight=1, last_used=50.0, ready_at=ready_at, load_time=load_time
    )


def test_a_demand_drains_a_busy_sidecar_once_it_waited_max_wait() -> None:
    wants = [Want("a", "a"), Want("c", "c", demand=Demand(1, since=100.0))]
    early = plan(wants, [_busy("a")], ONE, now=102.0)
    assert [type(x).__name__ for x in early.actions] == ["Wait"]
    assert early.wake_at == 103.0, "a pass comes when max_wait is reached"
    late = plan(wants, [_busy("a")], ONE, now=103.0)
    (stop,) = late.stops
    assert (stop.key, stop.reason, stop.drain, stop.bounded) == ("a", "contention", True, False)
    assert "drained for c (it waited 3.0s; max_wait 3s)" in stop.detail
    assert [w.key for w in late.waits] == ["c"], "c starts once a has finished its requests"


def test_a_busy_group_member_drained_for_its_group_is_not_drained_again_for_memory() -> None:
    # a group of one and a budget of one: the member leaving for the group is also the
    # memory the newcomer needs; it is drained once (found by test_invariants: a group
    # stop and a contention stop for the same sidecar)
    wants = [
        Want("busy", "busy", memory=GIB, group="h"),
        Want("new", "new", memory=GIB, group="h", demand=Demand(1, since=100.0)),
    ]
    member = Have("busy", "busy", "ready", in_flight=1, last_used=50.0, memory=GIB, group="h")
    limits = Limits(memory_budget=GIB, groups={"h": 1}, scheduling=ON)
    result = plan(wants, [member], limits, now=110.0)
    (stop,) = result.stops
    assert (stop.key, stop.reason, stop.drain) == ("busy", "group", True)
    (wait,) = result.waits
    assert wait.key == "new" and wait.reason == "new: draining busy"


def test_a_sidecar_is_not_drained_before_its_minimum_residency() -> None:
    wants = [Want("a", "a"), Want("c", "c", demand=Demand(1, since=100.0))]
    fresh = _busy("a", ready_at=100.0, load_time=10.0)  # resident at least 2 x 10 s
    held = plan(wants, [fresh], ONE, now=110.0)
    assert not held.stops
    assert held.wake_at == 120.0


def test_higher_priority_first_and_aging_lets_the_old_low_one_through() -> None:
    wants = [
        Want("lo", "lo", demand=Demand(1, since=100.0, priority=0)),
        Want("hi", "hi", demand=Demand(1, since=104.0, priority=2)),
    ]
    limits = Limits(max_sidecars=1, scheduling=Scheduling(max_wait=3.0, aging=3.0))
    assert [s.key for s in plan(wants, [], limits, now=104.0).starts] == ["hi"]
    # lo has waited 9 s: three aging steps put it at 3 > 2
    assert [s.key for s in plan(wants, [], limits, now=109.0).starts] == ["lo"]


def test_a_kept_sidecar_is_drained_not_evicted_and_unloads_when_its_keep_alive_ends() -> None:
    wants = [Want("a", "a"), Want("c", "c", demand=Demand(1, since=100.0))]
    kept = Have("a", "a", "ready", last_used=99.0, ready_at=0.0, keep_until=500.0)
    waiting = plan(wants, [kept], ONE, now=101.0)
    assert not waiting.stops, "an idle sidecar a request asked to keep is not evicted at once"
    (stop,) = plan(wants, [kept], ONE, now=103.0).stops
    assert stop.reason == "contention", "limits beat a client's keep_alive after max_wait"
    done = Have("a", "a", "ready", last_used=99.0, ready_at=0.0, keep_until=99.0)
    (unload,) = plan([Want("a", "a", ttl=600.0)], [done], ONE, now=100.0).stops
    assert unload.reason == "keep-alive"


def test_a_warm_idle_sidecar_makes_a_demand_wait_until_it_cools() -> None:
    wants = [Want("a", "a"), Want("c", "c", demand=Demand(1, since=100.0))]
    warm = Have("a", "a", "ready", last_used=99.5, ready_at=0.0, load_time=2.0)
    waiting = plan(wants, [warm], ONE, now=100.0)
    assert not waiting.stops
    assert waiting.wake_at == 101.5, "idle for its load time (2 s): evicted then"
    (stop,) = plan(wants, [warm], ONE, now=101.5).stops
    assert stop.reason == "evicted-lru"


# -- exclusive and persistent groups (llama-swap's) ---------------------------------------------


def test_an_exclusive_group_member_stops_everything_outside_but_persistent_groups() -> None:
    limits = Limits(
        groups={"big": 1, "tools": 2}, exclusive=frozenset({"big"}), persistent=frozenset({"tools"})
    )
    wants = [
        Want("big1", "big1", group="big", demand=Demand(1, since=0.0)),
        Want("solo", "solo"),
        Want("busy", "busy"),
        Want("embed", "embed", group="tools"),
    ]
    haves = [
        Have("solo", "solo", "ready", last_used=1.0),
        Have("busy", "busy", "ready", in_flight=1, last_used=2.0),
        Have("embed", "embed", "ready", last_used=1.0),
    ]
    decided = plan(wants, haves, limits, now=10.0)
    stops = {(s.key, s.reason, s.drain) for s in decided.stops}
    assert stops == {("solo", "group", True), ("busy", "group", True)}
    assert [w.key for w in decided.waits] == ["big1"], "it starts once busy has drained"
    later = plan(wants, [haves[2]], limits, now=11.0)
    assert [s.key for s in later.starts] == ["big1"], "the persistent group's member stays"


def test_a_non_exclusive_start_leaves_an_exclusive_group_alone_and_pinned_outsiders_refuse() -> (
    None
):
    limits = Limits(groups={"big": 1}, exclusive=frozenset({"big"}))
    running = Have("big1", "big1", "ready", last_used=1.0)
    other = [Want("big1", "big1", group="big"), Want("solo", "solo", demand=Demand(1, 0.0))]
    assert [s.key for s in plan(other, [running], limits, now=5.0).starts] == ["solo"]
    pinned = [
        Want("keep", "keep", pinned=True),
        Want("big1", "big1", group="big", demand=Demand(1, 0.0)),
    ]
    decided = plan(pinned, [Have("keep", "keep", "ready")], limits, now=5.0)
    (refusal,) = decided.refusals
    assert "exclusive and pinned keep runs" in refusal.reason


# -- memory per device -----------------------------------------------------------------------

SPLIT = Limits(device_budgets={"CUDA0": 24 * GIB, "host": 64 * GIB})


def _gpu(key: str, gpu: int, host: int, demand: Demand | None = None) -> Want:
    return Want(
        key,
        key,
        memory=(gpu + host) * GIB,
        devices={"CUDA0": gpu * GIB, "host": host * GIB},
        demand=demand,
    )


def test_a_partial_offload_is_budgeted_on_each_device() -> None:
    resident = Have(
        "a",
        "a",
        "ready",
        last_used=1.0,
        memory=30 * GIB,
        devices={"CUDA0": 20 * GIB, "host": 10 * GIB},
    )
    demand = Demand(1, since=0.0)
    # fits beside it on both devices: nothing is evicted
    fits = plan([_gpu("a", 20, 10), _gpu("d", 3, 20, demand=demand)], [resident], SPLIT, 5.0)
    assert ([s.key for s in fits.starts], fits.stops) == (["d"], ())
    # the GPU is short (20 + 10 > 24) although host memory is plenty: a goes
    gpu_short = plan([_gpu("a", 20, 10), _gpu("b", 10, 5, demand=demand)], [resident], SPLIT, 5.0)
    assert [(s.key, s.reason) for s in gpu_short.stops] == [("a", "evicted-memory")]
    assert [s.key for s in gpu_short.starts] == ["b"]
    # the host is short (10 + 60 > 64) although the GPU has room: a goes too
    host_short = plan([_gpu("a", 20, 10), _gpu("c", 2, 60, demand=demand)], [resident], SPLIT, 5.0)
    assert [s.key for s in host_short.stops] == ["a"]
    # more than a device holds at all: refused, naming the device
    (refusal,) = plan([_gpu("e", 30, 1, demand=demand)], [], SPLIT, 5.0).refusals
    assert "on CUDA0, whose budget is 24.0 GiB" in refusal.reason
