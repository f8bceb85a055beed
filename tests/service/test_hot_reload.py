"""Hot reload of a running Service against fake sidecars: what an edit of the profile restarts,
what it leaves alone, and every way a change can arrive (in-place write, save by rename,
a Kubernetes ConfigMap symlink swap, SIGHUP)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest
from service_helpers import (
    ProfileWriter,
    RunningService,
    chat,
    pid_alive,
    running_service,
    served_by,
)

from llamasup.profiles.load import load_profiles
from llamasup.testing.poll import wait_for

pytestmark = pytest.mark.anyio

THREE = ("alpha", "beta", "gamma")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def preloaded(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    models = dict.fromkeys(THREE, "preload: true")
    for model, lines in (extra or {}).items():
        models[model] = f"preload: true\n{lines}"
    return models


def directory_writer(
    tmp_path: Path, fake_server_bin: Path, server_extra: str = ""
) -> ProfileWriter:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    return ProfileWriter(fake_server_bin, tmp_path, profiles / "p.yaml", server_extra)


async def all_ready(running: RunningService, models: tuple[str, ...] = THREE) -> dict[str, int]:
    await wait_for(lambda: set(models) <= set(running.ready_pids()), what=f"{models} ready")
    return {model: running.ready_pids()[model] for model in models}


async def adopted(running: RunningService, revision: str) -> None:
    store = running.service.store
    await wait_for(
        lambda: store.current.revision == revision and store.last_reload.revision == revision,
        what=f"revision {revision} adopted (last reload: {store.last_reload})",
    )


async def assert_settled(running: RunningService) -> None:
    """A pass under the current profiles has nothing left to do."""
    decided = await running.service.reconciler.reconcile_once()
    assert decided.actions == (), decided.actions


def flag_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def revision_of(path: Path) -> str:
    return load_profiles(path, os.environ).revision


async def test_args_edit_restarts_only_that_model(tmp_path: Path, fake_server_bin: Path) -> None:
    writer = directory_writer(tmp_path, fake_server_bin)
    writer.write(preloaded())
    async with running_service(writer.target.parent) as running:
        before = await all_ready(running)
        writer.write(preloaded({"beta": "args: [--ctx-size, 1024]"}))
        await adopted(running, revision_of(writer.target.parent))
        await wait_for(
            lambda: running.ready_pids().get("beta") not in (None, before["beta"]),
            what="beta restarted",
        )
        after = await all_ready(running)
        assert after["alpha"] == before["alpha"]
        assert after["gamma"] == before["gamma"]
        assert after["beta"] != before["beta"]
        await wait_for(lambda: not pid_alive(before["beta"]), what="old beta process gone")
        assert pid_alive(after["alpha"]) and pid_alive(after["gamma"])
        status = await running.status()
        rows = status["sidecars"]
        assert isinstance(rows, list)
        beta_argv = next(row["argv"] for row in rows if row["model"] == "beta")
        assert flag_value(beta_argv, "--ctx-size") == "1024"
        assert served_by(await chat(running.client, "beta")) == after["beta"]


@pytest.mark.parametrize(
    "edit",
    [
        {"alpha": "description: the first model, now described"},
        {"alpha": "ttl: 2h", "gamma": "ttl: 3h"},
    ],
    ids=["description", "ttl"],
)
async def test_description_or_ttl_edit_restarts_nothing(
    tmp_path: Path, fake_server_bin: Path, edit: dict[str, str]
) -> None:
    writer = directory_writer(tmp_path, fake_server_bin)
    writer.write(preloaded({"gamma": "ttl: 1h"}))
    async with running_service(writer.target.parent) as running:
        before = await all_ready(running)
        old_revision = running.service.store.current.revision
        writer.write(preloaded(edit))
        new_revision = revision_of(writer.target.parent)
        assert new_revision != old_revision
        await adopted(running, new_revision)
        await assert_settled(running)
        assert running.ready_pids() == before
        assert all(pid_alive(pid) for pid in before.values())
        status = await running.status()
        assert status["profiles"]["last_reload"]["result"] == "ok"


async def test_adding_a_preload_model_starts_it_removing_one_stops_it(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = directory_writer(tmp_path, fake_server_bin)
    writer.write({"alpha": "preload: true", "beta": "preload: true"})
    async with running_service(writer.target.parent) as running:
        before = await all_ready(running, ("alpha", "beta"))
        writer.write(preloaded())
        after_add = await all_ready(running)
        assert {m: after_add[m] for m in ("alpha", "beta")} == before
        writer.write({"alpha": "preload: true", "gamma": "preload: true"})
        await wait_for(lambda: "beta" not in running.pids(), what="beta stopped")
        await wait_for(lambda: not pid_alive(before["beta"]), what="beta's process gone")
        await assert_settled(running)
        assert running.ready_pids() == {"alpha": before["alpha"], "gamma": after_add["gamma"]}
        reply = await running.client.post(
            "/v1/chat/completions",
            json={"model": "beta", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert reply.status_code == 404, reply.text


INVALID_EDITS = {
    # an unclosed flow sequence: the parser notices it at the next model's key
    "yaml-syntax": ("preload: true\nargs: [--ctx-size, 2048", "YAML syntax error"),
    "schema": ("preload: maybe", "expected boolean"),
}


@pytest.mark.parametrize("kind", sorted(INVALID_EDITS))
async def test_invalid_edit_changes_nothing_and_a_fix_applies(
    tmp_path: Path, fake_server_bin: Path, kind: str
) -> None:
    body, message = INVALID_EDITS[kind]
    writer = directory_writer(tmp_path, fake_server_bin)
    writer.write(preloaded())
    async with running_service(writer.target.parent) as running:
        before = await all_ready(running)
        good_revision = running.service.store.current.revision
        models = preloaded()
        models["beta"] = body
        text = writer.text(models)
        writer.target.write_text(text)
        store = running.service.store
        await wait_for(lambda: store.last_reload.result == "error", what="the reload rejected")
        status = await running.status()
        profiles = status["profiles"]
        assert isinstance(profiles, dict)
        last = profiles["last_reload"]
        assert last["result"] == "error"
        assert last["revision"] is None
        assert profiles["revision"] == good_revision
        [error] = last["errors"]
        assert error["file"] == str(writer.target)
        assert message in error["message"]
        lines = text.splitlines()
        beta = lines.index("  beta:") + 1  # 1-based: beta, path, preload/args, gamma
        # the line named: the bad value itself, or (syntax) where the parser noticed
        expected = beta + 2 if kind == "schema" else beta + 4
        assert error["line"] == expected, (error, lines[expected - 1])
        assert f"{writer.target}:{expected}" in str(store.last_reload.errors[0])
        await assert_settled(running)
        assert running.ready_pids() == before
        for model in THREE:
            assert served_by(await chat(running.client, model)) == before[model]
        writer.write(preloaded({"beta": "args: [--ctx-size, 2048]"}))
        await adopted(running, revision_of(writer.target.parent))
        await wait_for(
            lambda: running.ready_pids().get("beta") not in (None, before["beta"]),
            what="the fixed edit applied",
        )
        after = await all_ready(running)
        assert (after["alpha"], after["gamma"]) == (before["alpha"], before["gamma"])
        assert store.last_reload.result == "ok"


async def test_burst_of_edits_converges_to_the_last_one(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    argv_log = tmp_path / "argv.jsonl"
    writer = directory_writer(
        tmp_path, fake_server_bin, server_extra=f"env:\n  FAKE_LLAMA_ARGV_LOG: {argv_log}"
    )
    writer.write(preloaded())
    async with running_service(writer.target.parent) as running:
        before = await all_ready(running)
        sizes = [1000 + 16 * n for n in range(20)]
        for size in sizes:
            writer.write(preloaded({"beta": f"args: [--ctx-size, {size}]"}))
            await asyncio.sleep(0.05)  # pacing the edits, not waiting for anything
        final_revision = revision_of(writer.target.parent)
        await adopted(running, final_revision)

        def beta_runs_last() -> bool:
            pid = running.ready_pids().get("beta")
            return pid is not None and pid != before["beta"] and argv_of(argv_log, pid) is not None

        await wait_for(beta_runs_last, timeout=30.0, what="beta running the last edit")
        await assert_settled(running)
        pids = running.ready_pids()
        argv = argv_of(argv_log, pids["beta"])
        assert argv is not None
        assert flag_value(argv, "--ctx-size") == str(sizes[-1])
        assert (pids["alpha"], pids["gamma"]) == (before["alpha"], before["gamma"])
        # every intermediate beta that was spawned on the way is gone
        spawned = [int(str(record["pid"])) for record in argv_records(argv_log) if is_beta(record)]
        stale = [pid for pid in spawned if pid != pids["beta"]]
        await wait_for(lambda: not any(pid_alive(pid) for pid in stale), what="no stale beta")
        status = await running.status()
        assert status["profiles"]["revision"] == final_revision


def argv_records(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def is_beta(record: Mapping[str, object]) -> bool:
    argv = record["argv"]
    return isinstance(argv, list) and any(str(a).endswith("beta.gguf") for a in argv)


def argv_of(path: Path, pid: int) -> list[str] | None:
    for record in argv_records(path):
        if record["pid"] == pid:
            argv = record["argv"]
            assert isinstance(argv, list)
            return [str(a) for a in argv]
    return None


def configmap_swap(mount: Path, text: str, stamp: str) -> None:
    """What kubelet's atomic writer does: a new timestamped dir, a temporary ``..data``
    symlink pointing at it, renamed over ``..data``, then the old dir removed."""
    old = os.readlink(mount / "..data") if (mount / "..data").is_symlink() else None
    fresh = mount / f"..{stamp}"
    fresh.mkdir()
    (fresh / "profiles.yaml").write_text(text)
    temp = mount / "..data_tmp"
    temp.symlink_to(fresh.name)
    os.replace(temp, mount / "..data")
    if not (mount / "profiles.yaml").is_symlink():
        (mount / "profiles.yaml").symlink_to("..data/profiles.yaml")
    if old is not None:
        shutil.rmtree(mount / old)


@pytest.mark.parametrize("layout", ["directory", "single-file"])
async def test_configmap_symlink_swap_reloads(
    tmp_path: Path, fake_server_bin: Path, layout: str
) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    writer = ProfileWriter(fake_server_bin, tmp_path, mount / "profiles.yaml")
    configmap_swap(mount, writer.text(preloaded()), "2026_01_01_00_00_00.000000001")
    # the ..-directories are kubelet's bookkeeping, not profile files
    profiles = load_profiles(mount, os.environ)
    assert profiles.files == (str(mount / "profiles.yaml"),)
    served = mount if layout == "directory" else mount / "profiles.yaml"
    async with running_service(served) as running:
        before = await all_ready(running)
        text = writer.text(preloaded({"gamma": "args: [--ctx-size, 4096]"}))
        configmap_swap(mount, text, "2026_01_01_00_05_00.000000002")
        await adopted(running, revision_of(served))
        await wait_for(
            lambda: running.ready_pids().get("gamma") not in (None, before["gamma"]),
            what="gamma restarted after the swap",
        )
        after = await all_ready(running)
        assert (after["alpha"], after["beta"]) == (before["alpha"], before["beta"])
        status = await running.status()
        assert status["profiles"]["files"] == [str(mount / "profiles.yaml")]
        assert status["profiles"]["last_reload"]["result"] in ("ok", "unchanged")


@pytest.mark.parametrize("layout", ["directory", "single-file"])
async def test_save_by_rename_reloads(tmp_path: Path, fake_server_bin: Path, layout: str) -> None:
    writer = directory_writer(tmp_path, fake_server_bin)
    writer.write(preloaded())
    served = writer.target.parent if layout == "directory" else writer.target
    async with running_service(served) as running:
        before = await all_ready(running)
        writer.replace(preloaded({"alpha": "args: [--ctx-size, 3072]"}))
        await adopted(running, revision_of(served))
        await wait_for(
            lambda: running.ready_pids().get("alpha") not in (None, before["alpha"]),
            what="alpha restarted",
        )
        after = await all_ready(running)
        assert (after["beta"], after["gamma"]) == (before["beta"], before["gamma"])
        assert not (writer.target.parent / ".p.yaml.swp").exists()


async def test_sighup_reload_without_watching(tmp_path: Path, fake_server_bin: Path) -> None:
    writer = directory_writer(tmp_path, fake_server_bin)
    writer.write(preloaded())
    async with running_service(writer.target.parent, watch=False) as running:
        before = await all_ready(running)
        old_revision = running.service.store.current.revision
        writer.write(preloaded({"beta": "args: [--ctx-size, 1536]"}))
        # nothing watches: the edit is not seen until asked
        await assert_settled(running)
        assert running.service.store.current.revision == old_revision
        assert running.ready_pids() == before
        result = await running.service.reload("sighup")
        assert (result.result, result.trigger) == ("ok", "sighup")
        assert result.revision == revision_of(writer.target.parent)
        await wait_for(
            lambda: running.ready_pids().get("beta") not in (None, before["beta"]),
            what="beta restarted",
        )
        after = await all_ready(running)
        assert (after["alpha"], after["gamma"]) == (before["alpha"], before["gamma"])
        again = await running.service.reload("sighup")
        assert again.result == "unchanged"
