"""The control API on a whole running service: status, plan, apply, unload, sidecars, logs."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e.serve_process import serving
from service_helpers import (
    RunningService,
    chat,
    fake_profile,
    models_yaml,
    port_range,
    reconcile_passes,
    running_service,
    write_model_files,
)

from llamasup import __version__
from llamasup.cli.apply import apply_lines
from llamasup.profiles.load import ProfileTexts, load_profiles
from llamasup.profiles.persist import PersistError
from llamasup.profiles.store import ProfileStore, ReloadResult
from llamasup.service import status_view
from llamasup.testing.poll import wait_for

pytestmark = pytest.mark.anyio

#: every key of a sidecar row (``status_view.sidecar_dict``), the documented contract
SIDECAR_KEYS = {
    "key", "model", "agents", "state", "pid", "port", "started_at", "ready_at", "uptime",
    "restarts", "failures", "gave_up", "retry_in", "last_used", "in_flight", "waiting",
    "oldest_wait", "drain", "progress",
    "memory", "memory_devices", "memory_reported", "pinned", "last_error", "exit_code", "argv",
    "adopted_at",
    "adopted_from",
}  # fmt: skip


@dataclass
class Setup:
    """A profile directory (or file) of fake models; ``text`` rebuilds a file, same ports."""

    root: Path
    state: Path
    fake_bin: Path
    ports: str

    def text(self, models: dict[str, str], *, agents: str = "", server_extra: str = "") -> str:
        return fake_profile(
            self.fake_bin,
            self.state,
            models,
            agents=agents,
            server_extra=server_extra,
            ports=self.ports,
        )


def make_setup(tmp_path: Path, fake_bin: Path, model_ids: list[str]) -> Setup:
    write_model_files(tmp_path, model_ids)
    root = tmp_path / "profiles"
    root.mkdir()
    return Setup(root, tmp_path / "state", fake_bin, port_range())


def rows_by_model(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["model"]: row for row in status["sidecars"]}


async def ready(running: RunningService, *models: str) -> dict[str, int]:
    """Wait until each model has a ready sidecar; model -> pid."""

    def all_ready() -> bool:
        states = {
            s.sidecar.model: str(s.sidecar.state) for s in running.service.supervisor.statuses()
        }
        return all(states.get(m) == "ready" for m in models)

    await wait_for(all_ready, what=f"{models} ready")
    pids = running.pids()
    return {m: pids[m] or 0 for m in models}


# --- status and plan --------------------------------------------------------------------------


async def test_status_document(tmp_path: Path, fake_server_bin: Path) -> None:
    setup = make_setup(tmp_path, fake_server_bin, ["alpha", "beta"])
    (setup.root / "p.yaml").write_text(
        setup.text({"alpha": "preload: true", "beta": ""}, agents="coder: --temp 0.2")
    )
    async with running_service(setup.root, watch=False) as running:
        pids = await ready(running, "alpha")
        status = await running.status()
        assert set(status) == {
            "version", "listen", "process", "profiles", "limits", "reconciler", "sidecars",
        }  # fmt: skip
        assert status["version"] == __version__
        # a service started by a test, not by serve: no planned restarts
        assert status["process"]["restarts"] == 0
        assert status["process"]["last_restart"] is None
        assert status["listen"] == "http://127.0.0.1:8402"
        profiles: dict[str, Any] = status["profiles"]
        assert set(profiles) == {
            "source", "revision", "files", "loaded_at", "last_reload", "warnings",
            "auth_error", "restart_needed", "watch",
        }  # fmt: skip
        assert profiles["watch"] == {  # this service was not asked to watch
            "state": "off", "paths": [], "since": None, "error": None, "losses": 0,
        }  # fmt: skip
        assert profiles["source"] == str(setup.root)
        assert profiles["revision"] == running.service.profiles.revision
        assert profiles["files"] == [str(setup.root / "p.yaml")]
        assert profiles["last_reload"]["trigger"] == "startup"
        assert profiles["last_reload"]["result"] == "ok"
        assert (profiles["warnings"], profiles["auth_error"], profiles["restart_needed"]) == (
            [],
            None,
            [],
        )
        limits: dict[str, Any] = status["limits"]
        assert set(limits) == {
            "max_sidecars", "memory_budget", "running", "memory_estimated", "devices",
        }  # fmt: skip
        assert limits["running"] == 1
        reconciler: dict[str, Any] = status["reconciler"]
        assert reconciler["passes"] >= 1
        assert {"started", "duration_ms", "result", "actions", "summary"} <= set(reconciler["last"])
        assert any(
            action["action"] == "start"
            for record in reconciler["recent"]
            for action in record["actions"]
        )
        alpha = rows_by_model(await running.status())["alpha"]
        assert set(alpha) == SIDECAR_KEYS
        assert alpha["state"] == "ready"
        assert alpha["pid"] == pids["alpha"]
        assert isinstance(alpha["port"], int)
        assert alpha["argv"][0] == str(fake_server_bin)
        assert alpha["agents"] == []
        assert "beta" not in rows_by_model(status)

        await chat(running.client, "beta@coder")
        beta = rows_by_model(await running.status())["beta"]
        assert set(beta) == SIDECAR_KEYS
        assert (beta["state"], beta["agents"]) == ("ready", ["coder"])
        assert beta["pid"] == running.pids()["beta"]
        assert beta["last_used"] is not None
        sidecars = (await running.client.get("/sidecars")).json()
        assert isinstance(sidecars, list)
        assert [row["model"] for row in sidecars] == ["alpha", "beta"]
        assert all(set(row) == SIDECAR_KEYS for row in sidecars)


async def test_settled_plan_is_empty_and_a_dry_run_changes_nothing(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    setup = make_setup(tmp_path, fake_server_bin, ["alpha", "beta"])
    profile = setup.root / "p.yaml"
    original = setup.text({"alpha": "preload: true", "beta": "preload: true"})
    profile.write_text(original)
    async with running_service(setup.root, watch=False) as running:
        pids = await ready(running, "alpha", "beta")
        await wait_for(lambda: not running.service.reconciler.plan_now().actions)
        plan = (await running.client.get("/api/plan")).json()
        assert plan["actions"] == []
        assert plan["summary"]["sidecars"] == 2
        revision = running.service.profiles.revision
        beta_key = rows_by_model(await running.status())["beta"]["key"]

        edited = setup.text({"alpha": "preload: true", "beta": "preload: true\nargs: [-c, 1024]"})
        reply = await running.client.post(
            "/api/apply?dry_run=1", json={"files": {"p.yaml": edited}}
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["result"] == "dry-run"
        assert body["dry_run"] is True
        assert body["models"]["changed"] == ["beta"]
        assert body["models"]["unchanged"] == ["alpha"]
        assert body["previous_revision"] == revision
        assert body["revision"] != revision
        stops = [a for a in body["plan"]["actions"] if a["action"] == "stop"]
        assert [(a["key"], a["reason"]) for a in stops] == [(beta_key, "changed")]
        assert [a["action"] for a in body["plan"]["actions"]].count("start") == 1

        # a dry run that did act would have had beta stopped by a pass that began after it
        await reconcile_passes(running.service.reconciler)
        assert running.pids() == pids
        assert profile.read_text() == original
        assert running.service.profiles.revision == revision
        status = await running.status()
        assert status["profiles"]["revision"] == revision
        assert status["profiles"]["last_reload"]["trigger"] == "startup"


# --- apply ------------------------------------------------------------------------------------


async def test_apply_persists_adopts_and_survives_a_restart(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    setup = make_setup(tmp_path, fake_server_bin, ["alpha", "beta", "gamma"])
    server_text = setup.text({"alpha": "preload: true"})
    (setup.root / "00-server.yaml").write_text(server_text)
    (setup.root / "10-beta.yaml").write_text(models_yaml(setup.state, {"beta": "preload: true"}))
    (setup.root / "20-gamma.yaml").write_text(models_yaml(setup.state, {"gamma": ""}))
    files = {
        "00-server.yaml": server_text,
        "10-beta.yaml": models_yaml(setup.state, {"beta": "preload: true\nargs: [-c, 1024]"}),
    }
    async with running_service(setup.root, watch=False) as running:
        before = await ready(running, "alpha", "beta")
        revision = running.service.profiles.revision
        reply = await running.client.post("/api/apply", json={"files": files})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["result"] == "ok"
        assert body["dry_run"] is False
        assert body["changed"] is True
        assert body["previous_revision"] == revision
        applied = body["revision"]
        assert applied != revision
        assert body["models"] == {
            "added": [],
            "removed": ["gamma"],
            "changed": ["beta"],
            "updated": [],
            "unchanged": ["alpha"],
        }
        executed = [(a["action"], a["reason"]) for a in body["plan"]["actions"]]
        assert ("stop", "changed") in executed
        assert ("start", "preload") in executed

        on_disk = {p.name: p.read_text() for p in setup.root.iterdir()}
        assert on_disk == files  # gamma's file is gone, no temp file is left behind
        after = await ready(running, "alpha", "beta")
        assert after["alpha"] == before["alpha"]
        assert after["beta"] != before["beta"]
        status = await running.status()
        assert status["profiles"]["revision"] == applied
        assert status["profiles"]["last_reload"]["trigger"] == "apply"

    async with running_service(setup.root, watch=False) as restarted:
        assert restarted.service.profiles.revision == applied
        assert sorted(restarted.service.profiles.models) == ["alpha", "beta"]
        pids = await ready(restarted, "beta")
        argv = rows_by_model(await restarted.status())["beta"]["argv"]
        assert pids["beta"] and "1024" in argv


async def test_apply_reports_restart_needed_and_the_watcher_keeps_its_record(
    tmp_path: Path, fake_server_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = make_setup(tmp_path, fake_server_bin, ["alpha"])
    (setup.root / "p.yaml").write_text(setup.text({"alpha": ""}))
    moved = fake_profile(setup.fake_bin, setup.state, {"alpha": ""}, ports=port_range())
    async with running_service(setup.root, watch=True) as running:
        store = running.service.store
        reload = store.reload
        watched: list[ReloadResult] = []

        async def noting_what_the_watcher_did(
            trigger: str, texts: ProfileTexts | None = None
        ) -> ReloadResult:
            result = await reload(trigger, texts)
            if trigger == "watch":
                watched.append(result)
            return result

        monkeypatch.setattr(store, "reload", noting_what_the_watcher_did)
        dry = await running.client.post("/api/apply?dry_run=1", json={"files": {"p.yaml": moved}})
        assert dry.json()["restart_needed"] == ["ports"]
        assert "restart needed: ports" in "\n".join(apply_lines(dry.json()))
        reply = await running.client.post("/api/apply", json={"files": {"p.yaml": moved}})
        assert (reply.status_code, reply.json()["restart_needed"]) == (200, ["ports"])
        await wait_for(lambda: watched, what="the watcher to reload the files the apply wrote")
        last = (await running.status())["profiles"]["last_reload"]
        assert (last["trigger"], last["result"]) == ("apply", "ok")


async def test_apply_raw_yaml_to_a_single_profile_file(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    setup = make_setup(tmp_path, fake_server_bin, ["alpha"])
    profile = setup.root / "llamasup.yaml"
    profile.write_text(setup.text({"alpha": ""}))
    edited = setup.text({"alpha": "aliases: [first]"})
    async with running_service(profile, watch=False) as running:
        revision = running.service.profiles.revision
        refused = await running.client.post(
            "/api/apply",
            json={"files": {"a.yaml": edited, "b.yaml": edited}},
        )
        assert refused.status_code == 400
        reply = await running.client.post(
            "/api/apply", content=edited, headers={"content-type": "application/yaml"}
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["result"] == "ok"
        assert body["models"]["updated"] == ["alpha"]
        assert body["revision"] != revision
        assert profile.read_text() == edited
        assert sorted(p.name for p in setup.root.iterdir()) == ["llamasup.yaml"]
        assert running.service.profiles.find_model("first") is not None


async def test_apply_errors(tmp_path: Path, fake_server_bin: Path) -> None:
    setup = make_setup(tmp_path, fake_server_bin, ["alpha"])
    profile = setup.root / "p.yaml"
    original = setup.text({"alpha": ""})
    profile.write_text(original)
    async with running_service(setup.root, watch=False) as running:
        revision = running.service.profiles.revision
        invalid = setup.text({"alpha": "bogus_setting: 1"})
        line = invalid.splitlines().index("    bogus_setting: 1") + 1
        reply = await running.client.post("/api/apply", json={"files": {"p.yaml": invalid}})
        assert reply.status_code == 422
        assert reply.headers["x-llamasup-error"] == "1"
        body = reply.json()
        assert body["error"]["code"] == "invalid_profiles"
        assert body["error"]["type"] == "llamasup_error"
        assert body["error"]["message"] == (
            "the profile set is invalid (1 error); nothing was changed"
        )
        assert [(Path(e["file"]).name, e["line"]) for e in body["errors"]] == [("p.yaml", line)]
        assert "bogus_setting" in body["errors"][0]["message"]

        for content, headers in (
            (b"{not json", {"content-type": "application/json"}),
            (json.dumps({"files": "p.yaml"}).encode(), {"content-type": "application/json"}),
            (json.dumps({"files": {}}).encode(), {"content-type": "application/json"}),
            (original.encode(), {"content-type": "application/yaml"}),  # a dir needs JSON
            (b"\xff\xfe", {"content-type": "application/json"}),
            (
                b'{"files": ' + b"[" * 1400 + b"]" * 1400 + b"}",
                {"content-type": "application/json"},
            ),
        ):
            bad = await running.client.post("/api/apply", content=content, headers=headers)
            assert bad.status_code == 400, content
            assert bad.json()["error"]["code"] == "bad_apply"
        for name in ("sub/p.yaml", "../p.yaml", ".hidden.yaml", "p.txt", "\ud800.yaml"):
            bad = await running.client.post(
                "/api/apply",  # ASCII JSON: a lone surrogate is only sendable escaped
                content=json.dumps({"files": {name: original}}),
                headers={"content-type": "application/json"},
            )
            assert bad.status_code == 400, name
            assert bad.json()["error"]["code"] == "bad_apply"
            assert repr(name) in bad.json()["error"]["message"]

        too_long = "n" * 300 + ".yaml"  # 305 bytes: past the file system's NAME_MAX (255)
        for query in ("?dry_run=1", ""):
            bad = await running.client.post(
                "/api/apply" + query, json={"files": {too_long: original}}
            )
            assert bad.status_code == 422, bad.text
            assert bad.json()["error"]["code"] == "file_name_too_long"
            assert "305 bytes" in bad.json()["error"]["message"]
            assert "at most 255 bytes" in bad.json()["error"]["message"]

        huge = await running.client.post(
            "/api/apply", json={"files": {"p.yaml": original + "#" * (8 << 20)}}
        )
        assert huge.status_code == 413
        assert huge.json()["error"]["code"] == "request_too_large"

        assert profile.read_text() == original
        assert sorted(p.name for p in setup.root.iterdir()) == ["p.yaml"]
        assert running.service.profiles.revision == revision
        wrong = await running.client.get("/api/apply")
        assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
        assert wrong.json()["error"]["code"] == "method_not_allowed"
        wrong = await running.client.post("/sidecars/abc")
        assert (wrong.status_code, wrong.headers["allow"]) == (405, "DELETE")
        for path in ("/api/nothing", "/sidecarsX", "/metrics/x"):
            unknown = await running.client.get(path)
            assert unknown.status_code == 404, path
            assert unknown.json()["error"]["code"] == "not_found"


async def test_a_file_name_of_the_longest_length_is_applied(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    """255 bytes (NAME_MAX) is allowed, so the staged and backup files beside it (whose
    names are built from it) must fit as well."""
    setup = make_setup(tmp_path, fake_server_bin, ["alpha", "beta"])
    (setup.root / "p.yaml").write_text(setup.text({"alpha": ""}))
    longest = "é" * 124 + "nn.yaml"  # 2 bytes per é: 131 characters, 255 bytes
    assert len(longest.encode()) == 255
    texts = [
        models_yaml(setup.state, {"beta": ""}),
        models_yaml(setup.state, {"beta": "aliases: [b]"}),
    ]
    async with running_service(setup.root, watch=False) as running:
        for text in texts:  # the second apply replaces the file (a backup beside it)
            files = {"p.yaml": setup.text({"alpha": ""}), longest: text}
            reply = await running.client.post("/api/apply", json={"files": files})
            assert reply.status_code == 200, reply.text
        assert (setup.root / longest).read_text() == texts[-1]
        assert running.service.profiles.find_model("b") is not None
        assert sorted(p.name for p in setup.root.iterdir()) == sorted(["p.yaml", longest])


async def test_apply_that_cannot_be_written_changes_nothing(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    setup = make_setup(tmp_path, fake_server_bin, ["alpha", "beta"])
    original = setup.text({"alpha": ""})
    (setup.root / "p.yaml").write_text(original)
    (setup.root / "q.yaml").mkdir()  # a target that is not a regular file
    files = {"p.yaml": original, "q.yaml": models_yaml(setup.state, {"beta": ""})}
    async with running_service(setup.root, watch=False) as running:
        revision = running.service.profiles.revision
        reply = await running.client.post("/api/apply", json={"files": files})
        assert reply.status_code == 500, reply.text
        assert reply.json()["error"]["code"] == "persist_failed"
        assert "q.yaml" in reply.json()["error"]["message"]
        assert running.service.profiles.revision == revision
        assert (setup.root / "p.yaml").read_text() == original
        assert sorted(p.name for p in setup.root.iterdir()) == ["p.yaml", "q.yaml"]


def test_a_write_failing_midway_leaves_every_file_as_it_was(
    tmp_path: Path, fake_server_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The set is staged in full before anything is renamed into place, and files the set
    drops are removed last: a disk filling up on the second file changes nothing."""
    setup = make_setup(tmp_path, fake_server_bin, ["alpha", "beta", "gamma"])
    before = {
        "00-server.yaml": setup.text({"alpha": ""}),
        "10-beta.yaml": models_yaml(setup.state, {"beta": ""}),
        "20-gamma.yaml": models_yaml(setup.state, {"gamma": ""}),
    }
    for name, text in before.items():
        (setup.root / name).write_text(text)
    store = ProfileStore(setup.root, load_profiles(setup.root, {}), lambda _: None, environ={})
    after = {
        "00-server.yaml": setup.text({"alpha": "aliases: [a]"}),
        "10-beta.yaml": models_yaml(setup.state, {"beta": "aliases: [b]"}),
    }
    real_fsync = os.fsync
    calls: list[int] = []

    def full_disk(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(PersistError, match="No space left on device"):
        store._persist(after)
    assert {p.name: p.read_text() for p in setup.root.iterdir()} == before
    monkeypatch.setattr(os, "fsync", real_fsync)
    store._persist(after)
    assert {p.name: p.read_text() for p in setup.root.iterdir()} == after


# --- unload and sidecars ----------------------------------------------------------------------


async def test_unload(tmp_path: Path, fake_server_bin: Path) -> None:
    setup = make_setup(tmp_path, fake_server_bin, ["alpha", "beta", "gamma", "delta"])
    (setup.root / "p.yaml").write_text(
        setup.text(
            {
                "alpha": "pinned: true",
                "beta": "preload: true\naliases: [b]",
                "gamma": "preload: true",
                "delta": "",
            }
        )
    )
    async with running_service(setup.root, watch=False) as running:
        await ready(running, "alpha", "beta", "gamma")
        keys = {row["model"]: row["key"] for row in (await running.status())["sidecars"]}

        by_alias = await running.client.post("/api/unload", json={"model": "b"})
        assert by_alias.status_code == 200, by_alias.text
        assert by_alias.json() == {
            "stopped": [{"key": keys["beta"], "model": "beta"}],
            "skipped": [],
        }
        assert "beta" not in running.pids()
        stopped_row = rows_by_model(await running.status())["beta"]
        assert set(stopped_row) == SIDECAR_KEYS
        assert (stopped_row["state"], stopped_row["pid"]) == ("stopped", None)

        by_key = await running.client.delete(f"/sidecars/{keys['gamma']}")
        assert by_key.status_code == 200, by_key.text
        assert by_key.json()["stopped"] == [{"key": keys["gamma"], "model": "gamma"}]
        assert "gamma" not in running.pids()

        await chat(running.client, "delta")
        everything = await running.client.post("/api/unload", json={"all": True})
        assert everything.status_code == 200
        body = everything.json()
        assert [s["model"] for s in body["stopped"]] == ["delta"]
        assert body["skipped"] == [{"key": keys["alpha"], "model": "alpha", "reason": "pinned"}]
        assert set(running.pids()) == {"alpha"}

        for request in (
            running.client.post("/api/unload", json={"model": "nope"}),
            running.client.post("/api/unload", json={"key": "0123456789abcdef"}),
            running.client.delete("/sidecars/0123456789abcdef"),
        ):
            missing = await request
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] in ("unknown_model", "unknown_sidecar")
        for body_text in ("[1]", "{oops", '{"model": 3}', "[" * 1400 + "]" * 1400):
            bad = await running.client.post(
                "/api/unload", content=body_text, headers={"content-type": "application/json"}
            )
            assert bad.status_code == 400, body_text


# --- logs -------------------------------------------------------------------------------------


async def test_logs_tail_follow_and_stopped(tmp_path: Path, fake_server_bin: Path) -> None:
    setup = make_setup(tmp_path, fake_server_bin, ["alpha"])
    (setup.root / "p.yaml").write_text(setup.text({"alpha": "preload: true"}))
    async with running_service(setup.root, watch=False) as running:
        await ready(running, "alpha")
        key = rows_by_model(await running.status())["alpha"]["key"]
        tail = await running.client.get("/api/logs/alpha", params={"lines": "5"})
        assert tail.status_code == 200
        assert tail.headers["content-type"].startswith("text/plain")
        lines = tail.text.splitlines()
        assert 1 <= len(lines) <= 5
        assert any("listening on http://127.0.0.1:" in line for line in lines)
        assert (await running.client.get(f"/api/logs/{key}?lines=5")).text == tail.text

        async with running.client.stream(
            "GET", "/api/logs/alpha", params={"lines": "0", "follow": "1"}
        ) as follow:
            assert follow.status_code == 200
            seen: list[str] = []

            async def read_lines() -> None:
                async for line in follow.aiter_lines():
                    seen.append(line)

            reader = asyncio.create_task(read_lines())
            await chat(running.client, "alpha")
            await wait_for(lambda: any("stop processing" in line for line in seen))
            assert any("processing task" in line for line in seen)
            unloaded = await running.client.post("/api/unload", json={"model": "alpha"})
            assert unloaded.status_code == 200
            await asyncio.wait_for(reader, 10)  # the response ends with the sidecar
        assert not any("listening on" in line for line in seen)  # lines=0: no backlog

        from_disk = await running.client.get(f"/api/logs/{key}", params={"lines": "3"})
        assert from_disk.status_code == 200
        disk_lines = from_disk.text.splitlines()
        assert len(disk_lines) == 3
        assert any("stop processing" in line or "cleaning up" in line for line in disk_lines)
        by_model = await running.client.get("/api/logs/alpha", params={"lines": "3"})
        assert by_model.text == from_disk.text

        assert (await running.client.get("/api/logs/nobody")).status_code == 404
        assert (await running.client.get("/api/logs/alpha?lines=x")).status_code == 400


async def test_logs_of_an_agent_sidecar_by_its_name(tmp_path: Path, fake_server_bin: Path) -> None:
    setup = make_setup(tmp_path, fake_server_bin, ["alpha"])
    agents = "long: {model: alpha, flags: --ctx-size 8192}"
    (setup.root / "p.yaml").write_text(setup.text({"alpha": ""}, agents=agents))
    async with running_service(setup.root, watch=False) as running:
        await chat(running.client, "alpha@long")
        [row] = (await running.status())["sidecars"]
        tail_url = f"/api/logs/{row['key']}?lines=3"

        async def tail_with_the_last_line() -> str | None:
            text = (await running.client.get(tail_url)).text
            return text if "stop processing" in text else None

        # the request's last log line may follow its answer
        by_key = await wait_for(tail_with_the_last_line, what="the request's last log line")
        for name in ("alpha@long", "@long", "long"):
            reply = await running.client.get(f"/api/logs/{name}", params={"lines": "3"})
            assert (reply.status_code, reply.text) == (200, by_key), name
        assert (await running.client.get("/api/logs/alpha@nobody")).status_code == 404


CRASHING_APPLY = """
import os, sys
from pathlib import Path
from llamasup.profiles.persist import write_set
name, at, root = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
real, calls = getattr(os, name), []
def crash(*args):
    calls.append(args)
    if len(calls) == at: os._exit(9)
    real(*args)
setattr(os, name, crash)
write_set([(root / '00-server.yaml', sys.argv[4]), (root / '10-beta.yaml', sys.argv[5])],
          journal_dir=root)
"""


@pytest.mark.parametrize(
    ("function", "at", "outcome"),
    [
        # the journal recorded (staging, then committing), the first file replaced, then the
        # crash: a mixed set, rolled back
        ("replace", 4, "rolled back an apply interrupted by a crash"),
        # every file replaced and the journal says so; the crash is in removing the backups
        ("unlink", 1, "after it was complete"),
    ],
    ids=["mid-commit", "mid-cleanup"],
)
def test_serve_finishes_an_apply_a_crash_cut_short(
    tmp_path: Path, fake_server_bin: Path, function: str, at: int, outcome: str
) -> None:
    """SIGKILL of llamasup halfway through persisting an apply: the next ``serve`` finds the
    journal, puts the previous files back (or keeps a complete apply), says so, serves that
    set, and leaves none of the apply's hidden scratch files behind."""
    setup = make_setup(tmp_path, fake_server_bin, ["alpha", "beta", "gamma"])
    before = {
        "00-server.yaml": setup.text({"alpha": ""}),
        "10-beta.yaml": models_yaml(setup.state, {"beta": ""}),
    }
    for name, text in before.items():
        (setup.root / name).write_text(text)
    applied = {
        "00-server.yaml": setup.text({"alpha": "", "gamma": ""}),
        "10-beta.yaml": models_yaml(setup.state, {"beta": "description: applied"}),
    }
    argv = [function, str(at), str(setup.root), *applied.values()]
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_APPLY, *argv],
        capture_output=True,
        check=False,
    )
    assert crashed.returncode == 9, crashed.stderr
    assert (setup.root / "00-server.yaml").read_text() == applied["00-server.yaml"]
    assert any(p.name.startswith(".") for p in setup.root.iterdir())  # scratch files, journal
    expected = applied if outcome == "after it was complete" else before
    with serving(setup.root) as served:
        assert any(outcome in line for line in served.process.lines)
        assert sorted(served.status()["profiles"]["files"]) == sorted(
            str(setup.root / name) for name in expected
        )
        assert served.status()["profiles"]["revision"] == load_profiles(setup.root).revision
    assert {p.name: p.read_text() for p in setup.root.iterdir()} == expected


async def test_a_bug_in_the_control_api_is_still_answered_as_llamasup(
    tmp_path: Path, fake_server_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = make_setup(tmp_path, fake_server_bin, ["alpha"])
    (setup.root / "p.yaml").write_text(setup.text({"alpha": ""}))

    def broken(service: object) -> dict[str, Any]:
        raise RuntimeError("a bug")

    async with running_service(setup.root, watch=False) as running:
        monkeypatch.setattr(status_view, "status", broken)
        reply = await running.client.get("/api/status")
        assert (reply.status_code, reply.headers["x-llamasup-error"]) == (500, "1")
        assert reply.json()["error"]["code"] == "internal_error"
        assert (await running.client.get("/api/plan")).status_code == 200  # still serving
