"""The profile watch's inotify reader (Linux): batches like watchfiles, wakes only for events."""

from __future__ import annotations

import asyncio
import errno
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llamasup.service import inotify, watch
from llamasup.service.inotify import Change

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify: Linux"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def everything(_change: Change, _path: str) -> bool:
    return True


async def next_batch(
    batches: AsyncIterator[set[tuple[Change, str]]], within: float = 5
) -> set[tuple[Change, str]]:
    async with asyncio.timeout(within):
        return await anext(batches)


async def test_a_burst_of_writes_is_one_batch_handed_over_once_quiet(tmp_path: Path) -> None:
    # quiet for 200 ms: writes 5 ms apart stay one batch on a loaded machine too; the bound
    # (5 s) is far beyond that, so a hand-over before it was the quiet one
    batches = inotify.watch(
        tmp_path, recursive=True, accept=everything, debounce_ms=5000, quiet_ms=200
    )
    waiting = asyncio.ensure_future(next_batch(batches, within=10))
    await asyncio.sleep(0)  # the watch is set up when the generator first runs
    loop = asyncio.get_running_loop()
    began = loop.time()
    for index in range(5):
        (tmp_path / "p.yaml").write_text(f"version: {index}\n")
        await asyncio.sleep(0.005)
    (tmp_path / "q.yaml").write_text("x")
    batch = await waiting
    took = loop.time() - began
    assert (Change.added, str(tmp_path / "p.yaml")) in batch
    assert (Change.added, str(tmp_path / "q.yaml")) in batch
    assert (Change.modified, str(tmp_path / "p.yaml")) in batch
    assert took < 5  # handed over once quiet, not at the debounce bound
    (tmp_path / "p.yaml").unlink()
    assert await next_batch(batches) == {(Change.deleted, str(tmp_path / "p.yaml"))}
    await batches.aclose()


async def test_a_batch_is_handed_over_at_the_bound_while_events_keep_coming(
    tmp_path: Path,
) -> None:
    batches = inotify.watch(
        tmp_path, recursive=False, accept=everything, debounce_ms=60, quiet_ms=20
    )
    waiting = asyncio.ensure_future(next_batch(batches))
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    while not waiting.done() and loop.time() - began < 2:
        (tmp_path / "p.yaml").write_text("x")
        await asyncio.sleep(0.005)
    assert waiting.done()
    assert loop.time() - began < 0.5
    await batches.aclose()


async def test_a_new_subdirectory_is_watched_and_the_filter_applies(tmp_path: Path) -> None:
    def yaml_only(_change: Change, path: str) -> bool:
        return path.endswith(".yaml")

    batches = inotify.watch(tmp_path, recursive=True, accept=yaml_only, debounce_ms=60, quiet_ms=10)
    waiting = asyncio.ensure_future(next_batch(batches))
    await asyncio.sleep(0)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "sub").mkdir()
    # the directory is watched once the loop has read its creation: write until seen (a
    # watch that missed it would see nothing at all)
    while not waiting.done():
        (tmp_path / "sub" / "p.yaml").write_text("x")
        await asyncio.wait({waiting}, timeout=0.05)
    batch = await waiting
    assert {path for _, path in batch} == {str(tmp_path / "sub" / "p.yaml")}
    await batches.aclose()


async def test_an_idle_watch_has_no_thread_and_no_timer(tmp_path: Path) -> None:
    threads = threading.active_count()
    loop = asyncio.get_running_loop()
    timers = len(loop._scheduled)  # type: ignore[attr-defined]
    watcher = inotify.InotifyWatch(
        tmp_path, recursive=True, accept=everything, debounce_ms=60, quiet_ms=20
    )
    try:
        await asyncio.sleep(0.05)
        assert threading.active_count() == threads
        assert len(loop._scheduled) == timers  # type: ignore[attr-defined]
    finally:
        watcher.close()


async def test_a_missing_directory_cannot_be_watched(tmp_path: Path) -> None:
    with pytest.raises(OSError) as caught:
        inotify.InotifyWatch(
            tmp_path / "gone", recursive=True, accept=everything, debounce_ms=60, quiet_ms=20
        )
    assert caught.value.errno == errno.ENOENT


async def test_without_inotify_watchfiles_reports_the_same_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inotify, "available", lambda: False)
    batches = watch._changes(tmp_path, True, lambda _c, path: path.endswith(".yaml"))
    waiting = asyncio.ensure_future(next_batch(batches))
    while not waiting.done():  # watchfiles sets its watch up as the generator starts
        (tmp_path / "p.yaml").write_text("x")
        await asyncio.wait({waiting}, timeout=0.05)
    batch = await waiting
    assert {path for _, path in batch} == {str(tmp_path / "p.yaml")}
    assert all(isinstance(change, Change) for change, _ in batch)
    await batches.aclose()
