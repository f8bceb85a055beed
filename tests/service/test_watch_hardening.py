"""The watch keeps working when what it watches is replaced (a git-sync symlink swap, a
directory deleted and created again, its parent gone for a while), says so in status while it
cannot, and never adopts a file caught half-written."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from service_helpers import ProfileWriter, RunningService, pid_alive, running_service

from llamasup.cli.control import status_lines
from llamasup.profiles.store import ReloadResult
from llamasup.testing.poll import wait_for
from service.test_hot_reload import (
    THREE,
    adopted,
    all_ready,
    assert_settled,
    directory_writer,
    preloaded,
    revision_of,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def git_sync(root: Path, text: str, rev: str) -> Path:
    """What git-sync does: a new worktree, a new symlink to it renamed over ``profiles``."""
    worktree = root / rev
    worktree.mkdir()
    (worktree / "p.yaml").write_text(text)
    link = root / f".profiles-{rev}"
    link.symlink_to(rev)
    os.replace(link, root / "profiles")
    return worktree


async def watch_status(running: RunningService) -> dict[str, Any]:
    watch: dict[str, Any] = (await running.status())["profiles"]["watch"]
    return watch


async def replaced(running: RunningService, model: str, old: int) -> None:
    await wait_for(
        lambda: running.ready_pids().get(model) not in (None, old), what=f"{model} replaced"
    )


async def test_a_git_sync_symlink_swap_is_followed_every_time(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    root = tmp_path / "sync"
    root.mkdir()
    writer = ProfileWriter(fake_server_bin, tmp_path, root / "unused.yaml")
    git_sync(root, writer.text(preloaded()), "rev-abc")
    served = root / "profiles"
    async with running_service(served) as running:
        before = await all_ready(running)
        # the old worktree stays for a while (git-sync removes it later): no event inside
        # the watched directory tells that the link moved
        git_sync(root, writer.text(preloaded({"gamma": "args: [--ctx-size, 4096]"})), "rev-def")
        await adopted(running, revision_of(served))
        await replaced(running, "gamma", before["gamma"])
        shutil.rmtree(root / "rev-abc")
        git_sync(root, writer.text(preloaded({"beta": "args: [--ctx-size, 2048]"})), "rev-ghi")
        await adopted(running, revision_of(served))
        await replaced(running, "beta", before["beta"])
        after = await all_ready(running)
        assert after["alpha"] == before["alpha"]
        watch = await watch_status(running)
        assert (watch["state"], watch["paths"]) == ("watching", [str(root / "rev-ghi"), str(root)])
        assert running.service.store.last_reload.result == "ok"


async def test_a_directory_deleted_and_created_again_is_watched_again(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = directory_writer(tmp_path, fake_server_bin)
    writer.write(preloaded())
    served = writer.target.parent
    async with running_service(served) as running:
        before = await all_ready(running)
        store = running.service.store
        good = store.current.revision
        shutil.rmtree(served)
        await wait_for(lambda: store.last_reload.result == "error", what="the deletion seen")
        assert "no such file or directory" in store.last_reload.errors[0].message
        await wait_for(lambda: running.service.watcher.status.state == "lost", what="watch lost")
        watch = await watch_status(running)
        assert watch["error"] == f"{served} does not exist; watching {tmp_path} for it"
        assert watch["losses"] == 1
        assert store.current.revision == good  # the last good set keeps serving
        assert running.ready_pids() == before
        served.mkdir()
        writer.write(preloaded({"alpha": "args: [--ctx-size, 1024]"}))
        await adopted(running, revision_of(served))
        await replaced(running, "alpha", before["alpha"])
        after = await all_ready(running)
        assert (after["beta"], after["gamma"]) == (before["beta"], before["gamma"])
        watch = await watch_status(running)
        assert (watch["state"], watch["error"], watch["losses"]) == ("watching", None, 1)
        # and it keeps watching the new directory
        writer.write(preloaded({"alpha": "args: [--ctx-size, 1024]", "gamma": "ttl: 1h"}))
        await adopted(running, revision_of(served))


async def test_a_watch_that_cannot_be_set_up_is_retried_and_reported(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    """The served directory's parent gone too: nothing can be watched until it is back;
    status says so, and the watch comes back by itself."""
    parent = tmp_path / "etc"
    served = parent / "profiles"
    served.mkdir(parents=True)
    writer = ProfileWriter(fake_server_bin, tmp_path, served / "p.yaml")
    writer.write(preloaded())
    async with running_service(served) as running:
        before = await all_ready(running)
        watcher = running.service.watcher
        shutil.rmtree(parent)
        await wait_for(
            lambda: "cannot watch" in (watcher.status.error or ""), what="the watch lost"
        )
        watch = await watch_status(running)
        assert watch["state"] == "lost"
        assert watch["error"].startswith(f"cannot watch {parent}: No such file or directory")
        assert "retrying in" in watch["error"]
        lines = status_lines(await running.status(), time.time())
        assert f"watch lost: cannot watch {parent}: No such file or directory" in "\n".join(lines)
        served.mkdir(parents=True)
        writer.write(preloaded({"beta": "args: [--ctx-size, 1024]"}))
        await wait_for(lambda: watcher.status.state == "watching", what="watching again")
        await adopted(running, revision_of(served))
        await replaced(running, "beta", before["beta"])


async def test_a_write_that_pauses_halfway_is_adopted_once_whole(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = directory_writer(tmp_path, fake_server_bin)
    writer.write(preloaded())
    async with running_service(writer.target.parent) as running:
        before = await all_ready(running)
        adoptions: list[ReloadResult] = []
        running.service.store.listeners.append(adoptions.append)
        final = writer.text(preloaded({"gamma": "description: the last model, described"}))
        # the first half is a valid profile by itself: alpha and beta, gamma missing
        cut = final.index("  gamma:\n")
        with writer.target.open("w") as handle:
            handle.write(final[:cut])
            handle.flush()
            await asyncio.sleep(0.1)  # the writer pausing between its halves
            handle.write(final[cut:])
        revision = revision_of(writer.target.parent)
        await adopted(running, revision)
        await assert_settled(running)
        assert [(r.trigger, r.result, r.revision) for r in adoptions] == [("watch", "ok", revision)]
        assert running.ready_pids() == before
        assert all(pid_alive(before[model]) for model in THREE)
