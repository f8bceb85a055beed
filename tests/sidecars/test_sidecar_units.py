"""Pure pieces of the sidecar runtime: restart policy, log ring and file, ports."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamasup.planner.restart import RestartPolicy, RestartTracker
from llamasup.sidecars.ports import PortAllocator, PortsExhaustedError, validate_port_range
from llamasup.sidecars.proclog import ProcessLog
from llamasup.sidecars.types import SidecarSettings

from .sidecar_helpers import squat

pytestmark = pytest.mark.anyio


# -- restart policy ------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_and_jitter_spreads_it() -> None:
    policy = RestartPolicy(backoff_initial=1.0, backoff_factor=2.0, backoff_max=5.0, jitter=0.2)
    assert [policy.delay(n, 0.5) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.delay(2, 0.0) == pytest.approx(1.6)
    assert policy.delay(2, 1.0) == pytest.approx(2.4)


@pytest.mark.parametrize(
    ("failure_times", "give_up"),
    [
        ([0.0, 1.0, 2.0], True),  # three within the window
        ([0.0, 1.0, 11.0], False),  # the first one has aged out of the 10 s window
    ],
)
def test_start_limit_counts_failures_within_the_window(
    failure_times: list[float], give_up: bool
) -> None:
    tracker = RestartTracker(RestartPolicy(start_limit=3, start_window=10.0, jitter=0.0))
    decisions = [tracker.record_failure(t, 0.5, f"boom {t}") for t in failure_times]
    assert decisions[-1].give_up is give_up
    assert tracker.gave_up is give_up
    assert tracker.last_failure == f"boom {failure_times[-1]}"


def test_tracker_makes_starts_wait_for_the_backoff_and_reset_clears_all() -> None:
    tracker = RestartTracker(RestartPolicy(backoff_initial=2.0, jitter=0.0, start_limit=2))
    decision = tracker.record_failure(100.0, 0.5, "crash")
    assert decision.delay == 2.0 and not decision.give_up
    assert tracker.wait_before_start(100.5) == pytest.approx(1.5)
    assert tracker.wait_before_start(103.0) == 0.0
    assert tracker.record_failure(104.0, 0.5, "crash").give_up
    tracker.reset()
    assert not tracker.gave_up and tracker.failures(104.0) == 0
    assert tracker.wait_before_start(104.0) == 0.0


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="jitter"):
        RestartPolicy(jitter=2.0)
    with pytest.raises(ValueError, match="start_limit"):
        RestartPolicy(start_limit=0)


# -- process log ---------------------------------------------------------------------------


def test_lines_are_split_across_chunks_and_partial_lines_flushed(tmp_path: Path) -> None:
    log = ProcessLog(tmp_path / "x.log")
    assert log.feed("stderr", b"first li") == []
    lines = log.feed("stderr", b"ne\r\nsecond\nthi")
    assert [line.text for line in lines] == ["first line", "second"]
    assert [line.text for line in log.flush("stderr")] == ["thi"]
    log.note("hello")
    assert log.tail(2) == ("thi", "[llamasup] hello")
    assert log.last_child_line() == "thi"
    log.close()
    assert (tmp_path / "x.log").read_bytes() == b"first line\r\nsecond\nthi\n[llamasup] hello\n"


def test_bytes_without_a_newline_count_as_progress() -> None:
    # llama.cpp prints model-loading progress as bare dots, one per percent, flushed each
    clock = iter([0.0, 5.0, 9.0])
    log = ProcessLog(None, monotonic=lambda: next(clock))
    assert log.last_output == 0.0
    assert log.feed("stderr", b"...") == []
    assert log.last_output == 5.0
    log.feed("stderr", b".")
    assert log.last_output == 9.0


def test_endless_line_is_cut_not_buffered(tmp_path: Path) -> None:
    log = ProcessLog(None, max_line_bytes=10)
    lines = log.feed("stdout", b"." * 25)
    assert [len(line.text) for line in lines] == [10, 10]


def test_log_file_rotates_and_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    log = ProcessLog(path, ring_lines=5, max_file_bytes=1000, backups=2)
    for n in range(500):
        log.feed("stderr", f"line {n:04d} ".encode() + b"x" * 40 + b"\n")
    log.close()
    sizes = [p.stat().st_size for p in (path, path.with_name("x.log.1"), path.with_name("x.log.2"))]
    assert all(0 < size <= 1000 for size in sizes)
    assert not path.with_name("x.log.3").exists()
    assert path.read_text().splitlines()[-1].startswith("line 0499")
    assert [line.text[:9] for line in log.recent()] == [f"line {n:04d}" for n in range(495, 500)]


async def test_slow_follower_loses_oldest_lines_and_is_told() -> None:
    log = ProcessLog(None)
    follower = log.follow(capacity=3)
    log.feed("stdout", b"".join(f"{n}\n".encode() for n in range(10)))
    log.close()
    texts = [line.text async for line in follower]
    assert texts[0] == "[llamasup] 7 lines dropped: reader too slow"
    assert texts[1:] == ["7", "8", "9"]


# -- ports ---------------------------------------------------------------------------------


def test_allocator_hands_out_distinct_ports_and_round_robins(settings: SidecarSettings) -> None:
    first, _ = settings.port_range
    ports = PortAllocator(first, first + 2)
    a, b, c = ports.acquire(), ports.acquire(), ports.acquire()
    assert sorted((a, b, c)) == [first, first + 1, first + 2]
    with pytest.raises(PortsExhaustedError):
        ports.acquire()
    ports.release(a)
    ports.release(b)
    assert ports.acquire() == a  # search continues after the last one handed out
    assert ports.acquire(avoid=frozenset()) == b


def test_allocator_skips_ports_in_use(settings: SidecarSettings) -> None:
    first, _ = settings.port_range
    with squat(first):
        assert PortAllocator(first, first + 1).acquire() == first + 1


@pytest.mark.parametrize(("first", "last"), [(0, 10), (100, 70000), (2000, 1000)])
def test_port_ranges_llama_server_would_not_honour_are_refused(first: int, last: int) -> None:
    with pytest.raises(ValueError, match="port range"):
        validate_port_range(first, last)
