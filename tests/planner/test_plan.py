"""Table tests of the pure planner: inputs in, exact actions out."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from llamasup.planner.plan import plan
from llamasup.planner.types import (
    Action,
    Demand,
    Have,
    HaveState,
    Limits,
    Plan,
    Refuse,
    Start,
    Stop,
    Wait,
    Want,
)

GIB = 1 << 30
NOW = 1000.0


def want(key: str, **kw: object) -> Want:
    kw.setdefault("model", f"m-{key}")
    kw.setdefault("memory", GIB)
    return Want(key=key, **kw)  # type: ignore[arg-type]


def have(key: str, state: HaveState = "ready", **kw: object) -> Have:
    kw.setdefault("model", f"m-{key}")
    kw.setdefault("memory", GIB)
    return Have(key=key, state=state, **kw)  # type: ignore[arg-type]


def demand(since: float = 0.0, waiting: int = 1) -> Demand:
    return Demand(waiting=waiting, since=since)


def brief(actions: tuple[Action, ...]) -> list[tuple[str, ...]]:
    """Actions without their prose, for exact comparison."""
    out: list[tuple[str, ...]] = []
    for action in actions:
        if isinstance(action, Stop):
            out.append(("stop", action.key, action.reason, "drain" if action.drain else "now"))
        elif isinstance(action, Start):
            out.append(("start", action.key, action.reason))
        elif isinstance(action, Wait):
            out.append(("wait", action.key))
        else:
            out.append(("refuse", action.key))
    return out


@dataclass
class Case:
    name: str
    desired: list[Want]
    observed: list[Have]
    expected: list[tuple[str, ...]]
    limits: Limits = field(default_factory=Limits)
    now: float = NOW


CASES = [
    Case("nothing to do", [want("a")], [], []),
    Case("pinned is started", [want("a", pinned=True)], [], [("start", "a", "pinned")]),
    Case("demand is started", [want("a", demand=demand())], [], [("start", "a", "demand")]),
    Case("preload is started", [want("a", preload=True)], [], [("start", "a", "preload")]),
    Case(
        "already running: no action",
        [want("a", pinned=True, demand=demand())],
        [have("a", "starting")],
        [],
    ),
    Case(
        "backoff counts as running",
        [want("a", pinned=True)],
        [have("a", "backoff")],
        [],
    ),
    Case(
        "removed model is stopped, drained",
        [want("a")],
        [have("a"), have("x")],
        [("stop", "x", "removed", "drain")],
    ),
    Case(
        "changed flags: the old key is stopped as changed",
        [want("new", model="m", pinned=True)],
        [have("old", model="m")],
        [("stop", "old", "changed", "drain"), ("start", "new", "pinned")],
    ),
    Case(
        "a stopped record no longer desired is forgotten",
        [],
        [have("x", "stopped")],
        [("stop", "x", "removed", "drain")],
    ),
    Case(
        "LRU under the count limit",
        [want("a"), want("b"), want("c", demand=demand())],
        [have("a", last_used=20), have("b", last_used=10)],
        [("stop", "b", "evicted-lru", "now"), ("start", "c", "demand")],
        Limits(max_sidecars=2),
    ),
    Case(
        "memory budget evicts LRU until it fits",
        [want("a"), want("b"), want("c"), want("d", memory=5 * GIB, demand=demand())],
        [
            have("a", memory=4 * GIB, last_used=10),
            have("b", memory=4 * GIB, last_used=20),
            have("c", memory=2 * GIB, last_used=5),
        ],
        [
            ("stop", "c", "evicted-memory", "now"),
            ("stop", "a", "evicted-memory", "now"),
            ("start", "d", "demand"),
        ],
        Limits(memory_budget=10 * GIB),
    ),
    Case(
        "an eviction made unnecessary by a bigger later one is undone",
        [want("a"), want("b"), want("d", memory=6 * GIB, demand=demand())],
        [have("a", memory=GIB, last_used=5), have("b", memory=6 * GIB, last_used=10)],
        [("stop", "b", "evicted-memory", "now"), ("start", "d", "demand")],
        Limits(memory_budget=10 * GIB),
    ),
    Case(
        "in-flight requests protect a sidecar: wait",
        [want("a"), want("b", demand=demand())],
        [have("a", in_flight=2)],
        [("wait", "b")],
        Limits(max_sidecars=1),
    ),
    Case(
        "a demanded sidecar that is starting is not evicted",
        [want("a", demand=demand(1)), want("b", demand=demand(2))],
        [have("a", "starting")],
        [("wait", "b")],
        Limits(max_sidecars=1),
    ),
    Case(
        "pinned is never evicted: refused",
        [want("a", pinned=True), want("b", demand=demand())],
        [have("a")],
        [("refuse", "b")],
        Limits(max_sidecars=1),
    ),
    Case(
        "pinned beyond the budget: the first by model id runs, the other is refused",
        [
            want("a", model="zeta", pinned=True, memory=6 * GIB),
            want("b", model="alpha", pinned=True, memory=6 * GIB),
        ],
        [],
        [("start", "b", "pinned"), ("refuse", "a")],
        Limits(memory_budget=8 * GIB),
    ),
    Case(
        "pinned beyond the budget, next pass: still stable",
        [want("a", pinned=True, memory=6 * GIB), want("b", pinned=True, memory=6 * GIB)],
        [have("a", memory=6 * GIB)],
        [("refuse", "b")],
        Limits(memory_budget=8 * GIB),
    ),
    Case(
        "pinned start evicts an idle on-demand sidecar",
        [want("a", pinned=True), want("b")],
        [have("b")],
        [("stop", "b", "evicted-lru", "now"), ("start", "a", "pinned")],
        Limits(max_sidecars=1),
    ),
    Case(
        "idle past ttl is stopped",
        [want("a", ttl=60.0)],
        [have("a", last_used=NOW - 60)],
        [("stop", "a", "idle-ttl", "now")],
    ),
    Case(
        "ttl not reached yet",
        [want("a", ttl=60.0)],
        [have("a", last_used=NOW - 59)],
        [],
    ),
    Case(
        "ttl ignores busy, demanded, pinned and starting sidecars",
        [
            want("busy", ttl=1.0),
            want("dem", ttl=1.0, demand=demand()),
            want("pin", ttl=1.0, pinned=True),
            want("new", ttl=1.0),
        ],
        [have("busy", in_flight=1), have("dem"), have("pin"), have("new", "starting")],
        [],
    ),
    Case(
        "exclusive group: an idle member makes way",
        [want("a", group="g"), want("b", group="g", demand=demand())],
        [have("a")],
        [("stop", "a", "group", "drain"), ("start", "b", "demand")],
    ),
    Case(
        "exclusive group: a busy member is drained and the demand waits",
        [want("a", group="g"), want("b", group="g", demand=demand())],
        [have("a", in_flight=1)],
        [("stop", "a", "group", "drain"), ("wait", "b")],
    ),
    Case(
        "exclusive group: a member still serving an earlier demand keeps its turn",
        [want("a", group="g", demand=demand(1)), want("b", group="g", demand=demand(2))],
        [have("a", "starting", in_flight=1)],
        [("wait", "b")],
    ),
    Case(
        "group of two: no stop needed",
        [want("a", group="g"), want("b", group="g", demand=demand())],
        [have("a")],
        [("start", "b", "demand")],
        Limits(groups={"g": 2}),
    ),
    Case(
        "group held by a pinned member: refused",
        [want("a", group="g", pinned=True), want("b", group="g", demand=demand())],
        [have("a")],
        [("refuse", "b")],
    ),
    Case(
        "group member still stopping: wait",
        [want("a", group="g"), want("b", group="g", demand=demand())],
        [have("a", "stopping")],
        [("wait", "b")],
    ),
    Case(
        "oversized demand is refused",
        [want("a", memory=12 * GIB, demand=demand())],
        [],
        [("refuse", "a")],
        Limits(memory_budget=8 * GIB),
    ),
    Case(
        "failed sidecar is not restarted; its demand is refused",
        [want("a", demand=demand()), want("b", pinned=True)],
        [have("a", "failed", failure="exit 1"), have("b", "failed", failure="exit 1")],
        [("refuse", "b"), ("refuse", "a")],
    ),
    Case(
        "demanded while stopping: wait for it to be gone",
        [want("a", demand=demand())],
        [have("a", "stopping")],
        [("wait", "a")],
    ),
    Case(
        "a stopping sidecar's memory counts until it is gone",
        [want("b", memory=4 * GIB, demand=demand())],
        [have("x", "stopping", memory=6 * GIB)],
        [("wait", "b")],
        Limits(memory_budget=8 * GIB),
    ),
    Case(
        "a busy removed sidecar keeps its memory while it drains",
        [want("b", memory=4 * GIB, demand=demand())],
        [have("x", memory=6 * GIB, in_flight=1)],
        [("stop", "x", "removed", "drain"), ("wait", "b")],
        Limits(memory_budget=8 * GIB),
    ),
    Case(
        "an idle removed sidecar frees its memory in the same plan",
        [want("b", memory=4 * GIB, demand=demand())],
        [have("x", memory=6 * GIB)],
        [("stop", "x", "removed", "drain"), ("start", "b", "demand")],
        Limits(memory_budget=8 * GIB),
    ),
    Case(
        "stops come before starts",
        [want("a", pinned=True), want("b", demand=demand()), want("c", ttl=1.0)],
        [have("c", last_used=0), have("x")],
        [
            ("stop", "c", "idle-ttl", "now"),
            ("stop", "x", "removed", "drain"),
            ("start", "a", "pinned"),
            ("start", "b", "demand"),
        ],
    ),
    Case(
        "FIFO: the earlier demand gets the free slot",
        [want("a", demand=demand(5)), want("b", demand=demand(3)), want("x")],
        [have("x", in_flight=1)],
        [("start", "b", "demand"), ("wait", "a")],
        Limits(max_sidecars=2),
    ),
    Case(
        "FIFO: a waiting demand keeps its room from a later, smaller one",
        [
            want("a", memory=6 * GIB, demand=demand(1)),
            want("b", memory=2 * GIB, demand=demand(2)),
            want("x"),
        ],
        [have("x", memory=6 * GIB, in_flight=1)],
        [("wait", "a"), ("wait", "b")],
        Limits(memory_budget=10 * GIB),
    ),
    Case(
        "evicted preload is not restarted",
        [want("a", preload=True)],
        [have("a", "stopped")],
        [],
    ),
    Case(
        "an evicted preload starts again on demand",
        [want("a", preload=True, demand=demand())],
        [have("a", "stopped")],
        [("start", "a", "demand")],
    ),
    Case(
        "preload never evicts",
        [want("a", preload=True), want("b")],
        [have("b")],
        [],
        Limits(max_sidecars=1),
    ),
    Case(
        "lowered limits: idle sidecars are evicted LRU until it fits",
        [want("a"), want("b"), want("c")],
        [have("a", last_used=3), have("b", last_used=1), have("c", last_used=2, in_flight=1)],
        [("stop", "b", "evicted-lru", "now"), ("stop", "a", "evicted-lru", "now")],
        Limits(max_sidecars=1),
    ),
    Case(
        "a member still stopping does not push out the one that replaced it",
        [want("a", group="g"), want("b", group="g")],
        [have("a", "stopping"), have("b", "starting")],
        [],
    ),
    Case(
        "a stopping sidecar does not cause evictions under the count limit",
        [want("a"), want("b")],
        [have("a", "stopping"), have("b")],
        [],
        Limits(max_sidecars=1),
    ),
    Case(
        "lowered group limit: an idle member goes",
        [want("a", group="g"), want("b", group="g")],
        [have("a", last_used=5), have("b", last_used=1)],
        [("stop", "b", "group", "drain")],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_plan_table(case: Case) -> None:
    result = plan(case.desired, case.observed, case.limits, case.now)
    assert brief(result.actions) == case.expected


def test_oversized_reason_names_the_numbers() -> None:
    result = plan(
        [want("a", memory=12 * GIB, demand=demand())], [], Limits(memory_budget=8 * GIB), NOW
    )
    (refusal,) = result.refusals
    assert "needs 12.0 GiB, budget 8.0 GiB" in refusal.reason


def test_refusal_carries_the_failure() -> None:
    result = plan(
        [want("a", demand=demand())], [have("a", "failed", failure="exit 1: bad gguf")], Limits(), 0
    )
    assert result.refusals[0].reason.endswith("exit 1: bad gguf")


def test_drained_stop_reports_in_flight() -> None:
    result = plan([], [have("x", in_flight=3)], Limits(), NOW)
    assert result.stops == (Stop("x", "removed", True, 3, result.stops[0].detail),)


def test_wake_at_is_the_next_ttl_expiry() -> None:
    result = plan(
        [want("a", ttl=60.0), want("b", ttl=10.0), want("c", ttl=5.0)],
        [have("a", last_used=NOW - 10), have("b", last_used=NOW - 5), have("c", in_flight=1)],
        Limits(),
        NOW,
    )
    assert result.actions == ()
    assert result.wake_at == NOW + 5


def test_unknown_memory_counts_as_zero_with_a_note() -> None:
    result = plan([want("a", memory=None, demand=demand())], [], Limits(memory_budget=1), NOW)
    assert brief(result.actions) == [("start", "a", "demand")]
    assert any("memory unknown" in note for note in result.notes)


def test_usage_after_the_plan() -> None:
    result = plan(
        [want("a", memory=2 * GIB, pinned=True), want("b", memory=GIB)],
        [have("b", memory=GIB), have("x", memory=4 * GIB, in_flight=1)],
        Limits(),
        NOW,
    )
    assert (result.usage.sidecars, result.usage.memory) == (3, 7 * GIB)
    assert result.summary()["starts"] == 1


def test_duplicate_keys_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        plan([want("a"), want("a")], [], Limits(), NOW)


def test_determinism_under_shuffling() -> None:
    rng = random.Random(7)
    desired = [
        want(
            f"k{i}",
            memory=(i % 5 + 1) * GIB,
            group="g" if i % 7 == 0 else None,
            pinned=i % 11 == 0,
            preload=i % 13 == 0,
            ttl=30.0 if i % 3 else None,
            demand=demand(float(i % 4)) if i % 5 == 0 else None,
        )
        for i in range(60)
    ]
    observed = [
        have(f"k{i}", memory=(i % 5 + 1) * GIB, last_used=float(i % 9), in_flight=i % 4 == 0)
        for i in range(1, 60, 3)
    ] + [have("gone", memory=GIB)]
    limits = Limits(max_sidecars=12, memory_budget=30 * GIB)
    reference = plan(desired, observed, limits, 40.0)
    assert reference.actions
    for _ in range(20):
        rng.shuffle(desired)
        rng.shuffle(observed)
        assert plan(desired, observed, limits, 40.0) == reference


def test_plan_is_ordered_stops_starts_then_the_rest() -> None:
    result: Plan = plan(
        [want("a", demand=demand()), want("b", demand=demand(1), memory=99 * GIB)],
        [have("x")],
        Limits(memory_budget=8 * GIB),
        NOW,
    )
    kinds = [type(action) for action in result.actions]
    assert kinds == [Stop, Start, Refuse]


def test_desired_may_be_a_mapping_kept_by_the_caller() -> None:
    desired = [want("a", pinned=True), want("b", demand=demand())]
    observed = [have("x")]
    as_mapping = {w.key: w for w in desired}
    assert plan(as_mapping, observed, Limits(), NOW) == plan(desired, observed, Limits(), NOW)
