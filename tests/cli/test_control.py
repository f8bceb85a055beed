"""The control CLI (apply, diff, status, plan, logs, unload, reload) against a whole Service on
a real socket with fake sidecars. ``main`` blocks, so it runs in a thread while the service
runs in the test's event loop."""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import os
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import RunningService, fake_profile, port_range, running_service
from service_helpers import write_model_files as write_models

from llamasup.cli import client as cli_control_client
from llamasup.cli import control as cli_control
from llamasup.cli.main import main
from llamasup.sidecars.proclog import LogFollower
from llamasup.testing.poll import wait_for
from llamasup.testing.process import free_port

pytestmark = pytest.mark.anyio

ADMIN_KEY = "admin-secret-123"
INFERENCE_KEY = "inference-secret-456"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LLAMASUP_SERVER", "LLAMASUP_API_KEY", "LLAMASUP_PROFILES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./profiles to pick a default server from


class Profiles:
    """Profile texts for one test: the same port range in every variant, so a variant differs
    from another only where the test says."""

    def __init__(self, fake_bin: Path, tmp_path: Path) -> None:
        self.fake_bin = fake_bin
        self.state = tmp_path / "state"
        self.ports = port_range()
        write_models(tmp_path, ["alpha", "beta"])

    def text(self, models: dict[str, str], server_extra: str = "") -> str:
        text = fake_profile(self.fake_bin, self.state, models, server_extra=server_extra)
        return re.sub(r"(?m)^  ports: .*$", f"  ports: {self.ports}", text)


BOTH = {"alpha": "preload: true", "beta": "preload: true"}
BETA_CHANGED = {"alpha": "preload: true", "beta": "preload: true\nargs: [--ctx-size, 1024]"}


def write_set(directory: Path, text: str) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "p.yaml").write_text(text)
    return directory


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def ready(running: RunningService, *models: str) -> Callable[[], bool]:
    def check() -> bool:
        states = {
            s.sidecar.model: str(s.sidecar.state) for s in running.service.supervisor.statuses()
        }
        return all(states.get(m) == "ready" for m in models)

    return check


# -- apply and diff ------------------------------------------------------------------------------


async def test_apply_dry_run_prints_the_plan_and_changes_nothing(
    tmp_path: Path, fake_server_bin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = Profiles(fake_server_bin, tmp_path)
    served = write_set(tmp_path / "served", texts.text(BOTH))
    local = write_set(tmp_path / "local", texts.text(BETA_CHANGED))
    async with running_service(served, watch=False) as running:
        await wait_for(ready(running, "alpha", "beta"))
        before = running.pids()
        code, out, err = await cli(
            capsys, "apply", "-f", str(local), "--dry-run", "--server", running.url
        )
        assert code == 0, err
        assert "dry run: revision" in out
        assert "models changed (sidecar replaced): beta" in out
        plan = [line.split() for line in out.splitlines() if line.startswith(("stop ", "start "))]
        assert {(row[0], row[2]) for row in plan} == {("stop", "beta"), ("start", "beta")}
        assert (served / "p.yaml").read_text() == texts.text(BOTH)
        assert running.pids() == before

        code, out, _ = await cli(
            capsys, "apply", "-f", str(local), "--dry-run", "-o", "json", "--server", running.url
        )
        doc = json.loads(out)
        assert code == 0
        assert doc["dry_run"] is True
        assert doc["models"]["changed"] == ["beta"]
        assert {a["model"] for a in doc["plan"]["actions"]} == {"beta"}


async def test_apply_persists_and_restarts_only_the_changed_model(
    tmp_path: Path, fake_server_bin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = Profiles(fake_server_bin, tmp_path)
    served = write_set(tmp_path / "served", texts.text(BOTH))
    local = write_set(tmp_path / "local", texts.text(BETA_CHANGED))
    async with running_service(served, watch=False) as running:
        await wait_for(ready(running, "alpha", "beta"))
        before = running.pids()
        code, out, err = await cli(capsys, "apply", "-f", str(local), "--server", running.url)
        assert code == 0, err
        assert out.startswith("applied: revision")
        assert "models changed (sidecar replaced): beta" in out
        assert (served / "p.yaml").read_text() == texts.text(BETA_CHANGED)
        await wait_for(lambda: running.pids().get("beta") not in (None, before["beta"]))
        await wait_for(ready(running, "alpha", "beta"))
        assert running.pids()["alpha"] == before["alpha"]

        # the same set again: nothing to do, still exit 0
        code, out, _ = await cli(capsys, "apply", "-f", str(local), "--server", running.url)
        assert code == 0
        assert out.startswith("unchanged: revision")


async def test_diff_exits_0_when_identical_and_1_on_a_change(
    tmp_path: Path, fake_server_bin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = Profiles(fake_server_bin, tmp_path)
    served = write_set(tmp_path / "served", texts.text(BOTH))
    same = write_set(tmp_path / "same", texts.text(BOTH))
    changed = write_set(tmp_path / "changed", texts.text(BETA_CHANGED))
    async with running_service(served, watch=False) as running:
        await wait_for(ready(running, "alpha", "beta"))
        code, out, err = await cli(capsys, "diff", "-f", str(same), "--server", running.url)
        assert code == 0, out + err
        assert "same as the served revision" in out
        assert "plan: nothing to do" in out

        code, out, _ = await cli(capsys, "diff", "-f", str(changed), "--server", running.url)
        assert code == 1
        assert "models changed (sidecar replaced): beta" in out
        assert (served / "p.yaml").read_text() == texts.text(BOTH)


async def test_invalid_profile_names_the_local_file_and_line(
    tmp_path: Path, fake_server_bin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = Profiles(fake_server_bin, tmp_path)
    served = write_set(tmp_path / "served", texts.text(BOTH))
    bad_text = texts.text({"alpha": "preload: true", "beta": "ttl: banana"})
    local = write_set(tmp_path / "local", bad_text)
    line = bad_text.splitlines().index("    ttl: banana") + 1
    async with running_service(served, watch=False) as running:
        code, _, err = await cli(capsys, "apply", "-f", str(local), "--server", running.url)
        assert code == 1
        assert f"error: {local / 'p.yaml'}:{line}: models.beta.ttl" in err
        assert "nothing was changed" in err
        assert (served / "p.yaml").read_text() == texts.text(BOTH)

        # a single file: same mapping; diff calls an invalid set an error (2), not "differs"
        code, _, err = await cli(
            capsys, "diff", "-f", str(local / "p.yaml"), "--server", running.url
        )
        assert code == 2
        assert f"{local / 'p.yaml'}:{line}:" in err


def test_unreachable_server_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    local = write_set(tmp_path / "local", "version: 1\n")
    for argv in (["status"], ["apply", "-f", str(local)], ["logs", "alpha"], ["unload", "--all"]):
        assert main([*argv, "--server", url]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"llamasup: cannot reach llamasup at {url}: ")


def test_server_defaults_to_the_env_then_the_local_profile_listen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    profile = tmp_path / "profiles.yaml"
    profile.write_text(
        f"server:\n  listen: 0.0.0.0:{port}\n  allow_public_listen: true\n"
        "models:\n  m: {args: [--hf-repo, a/b]}\n"
    )
    monkeypatch.setenv("LLAMASUP_PROFILES", str(profile))
    assert main(["status"]) == 2
    assert f"cannot reach llamasup at http://127.0.0.1:{port}:" in capsys.readouterr().err
    monkeypatch.setenv("LLAMASUP_SERVER", f"127.0.0.1:{port + 1}")
    assert main(["plan"]) == 2
    assert f"cannot reach llamasup at http://127.0.0.1:{port + 1}:" in capsys.readouterr().err


def test_a_local_profile_that_does_not_load_still_names_its_listen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    profile = tmp_path / "profiles.yaml"
    # a typo, and a variable only the service's unit sets: it does not validate here
    profile.write_text(
        f"server:\n  listen: 127.0.0.1:{port}\n  max_sidecar: 2\n"
        "models:\n  m: {path: '${env.MODELS_DIR_ONLY_IN_THE_UNIT}/m.gguf'}\n"
    )
    monkeypatch.setenv("LLAMASUP_PROFILES", str(profile))
    monkeypatch.delenv("LLAMASUP_SERVER", raising=False)
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert f"{profile} does not load (" in err
    assert f"cannot reach llamasup at http://127.0.0.1:{port}:" in err


def test_a_server_that_is_not_llamasup_is_named_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "index.html").write_text("<html>hello</html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as other:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{other.server_address[1]}"
        try:
            for argv in (["status"], ["logs", "alpha"], ["unload", "--all"], ["plan"]):
                assert main([*argv, "--server", url]) == 2, argv
                err = capsys.readouterr().err
                assert "not as llamasup does: is it the llamasup front?" in err, err
                assert "<html" not in err
        finally:
            other.shutdown()


class _LlamaServerLike(http.server.BaseHTTPRequestHandler):
    """A bare llama-server on the address: JSON 404s, ``Server: llama.cpp``."""

    def _answer(self) -> None:
        body = b'{"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}'
        self.send_response(404)
        self.send_header("Server", "llama.cpp")
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return


def test_a_bare_llama_server_is_not_taken_for_llamasup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LlamaServerLike) as other:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{other.server_address[1]}"
        try:
            for argv in (["status"], ["logs", "alpha"], ["unload", "--all"], ["reload"]):
                assert main([*argv, "--server", url]) == 2, argv
                assert "not as llamasup does" in capsys.readouterr().err
        finally:
            other.shutdown()


def test_an_unreadable_local_profile_falls_back_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "profiles"
    root.mkdir()
    real_iterdir = Path.iterdir

    def locked(self: Path) -> Any:
        if self == root:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", locked)
    monkeypatch.setenv("LLAMASUP_PROFILES", str(root))
    monkeypatch.delenv("LLAMASUP_SERVER", raising=False)
    assert cli_control_client.default_server() == "http://127.0.0.1:8402"
    assert "does not load" in capsys.readouterr().err


def test_a_silent_server_times_out_even_for_a_log_tail(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_control_client, "REQUEST_TIMEOUT", httpx.Timeout(0.5, connect=1.0))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        assert main(["logs", "alpha", "--server", url]) == 2
    assert "cannot reach llamasup" in capsys.readouterr().err


# -- status, plan, logs, unload, reload ----------------------------------------------------------


async def test_status_table_json_and_watch(
    tmp_path: Path,
    fake_server_bin: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = Profiles(fake_server_bin, tmp_path)
    served = write_set(tmp_path / "served", texts.text({"alpha": "preload: true", "beta": ""}))
    async with running_service(served, watch=False) as running:
        await wait_for(ready(running, "alpha"))
        pid = running.pids()["alpha"]
        code, out, err = await cli(capsys, "status", "--server", running.url)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].startswith("llamasup 0.1.0 at ")
        assert f"profiles {served} revision" in lines[0]
        assert lines[1].startswith("last reload: ok (startup, ")
        header = next(line for line in lines if line.startswith("MODEL"))
        assert header.split()[:4] == ["MODEL", "AGENTS", "KEY", "STATE"]
        row = next(line.split() for line in lines if line.startswith("alpha "))
        assert row[3] == "ready" and row[4] == str(pid)

        code, out, _ = await cli(capsys, "status", "-o", "json", "--server", running.url)
        doc = json.loads(out)
        assert code == 0
        assert [(s["model"], s["state"]) for s in doc["sidecars"]] == [("alpha", "ready")]

        frames: list[float] = []

        def fake_sleep(seconds: float) -> None:
            frames.append(seconds)
            if len(frames) == 2:
                raise KeyboardInterrupt

        monkeypatch.setattr(cli_control, "sleep", fake_sleep)
        code, out, _ = await cli(capsys, "status", "-w", "0.5", "--server", running.url)
        assert code == 0
        assert frames == [0.5, 0.5]
        assert out.count("last reload:") == 2
        assert "\x1b[" not in out  # not a terminal: no screen clearing


async def test_live_watch_redraws_as_the_host_changes(
    tmp_path: Path,
    fake_server_bin: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = Profiles(fake_server_bin, tmp_path)
    served = write_set(tmp_path / "served", texts.text({"alpha": "preload: true", "beta": ""}))
    async with running_service(served, watch=False) as running:
        await wait_for(ready(running, "alpha"))
        frames: list[dict[str, str]] = []
        draw = cli_control._draw

        def counting(args: Any, doc: Any, *, clear: bool) -> None:
            draw(args, doc, clear=clear)
            frames.append({row["model"]: row["state"] for row in doc["sidecars"]})
            if frames[-1].get("beta") == "ready":
                raise KeyboardInterrupt  # Ctrl-C once the change is on screen

        monkeypatch.setattr(cli_control, "_draw", counting)
        monkeypatch.setattr(cli_control, "sleep", lambda _s: pytest.fail("live watch polled"))
        watching = asyncio.create_task(cli(capsys, "status", "-w", "--server", running.url))
        await wait_for(lambda: frames, what="the first frame")
        assert frames[0] == {"alpha": "ready"}
        reply = await running.client.post(
            "/v1/chat/completions",
            json={"model": "beta", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]},
        )
        assert reply.status_code == 200
        code, out, _ = await asyncio.wait_for(watching, 30)
        assert code == 0
        assert frames[-1] == {"alpha": "ready", "beta": "ready"}
        assert out.count("last reload:") == len(frames)


async def test_live_watch_polls_a_server_without_an_event_stream(
    tmp_path: Path,
    fake_server_bin: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = Profiles(fake_server_bin, tmp_path)
    served = write_set(tmp_path / "served", texts.text({"alpha": ""}))
    async with running_service(served, watch=False) as running:
        status = await running.status()  # a real document, served below by an "older" front

    class OldServer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(status).encode() if self.path == "/api/status" else b"{}"
            self.send_response(200 if self.path == "/api/status" else 404)
            if self.path != "/api/status":  # an older llamasup's 404
                self.send_header("x-llamasup-error", "not_found")
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OldServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    slept: list[float] = []

    def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_control, "sleep", fake_sleep)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code, out, _ = await cli(capsys, "status", "-w", "--server", url)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0, _
    assert slept == [2.0]  # fell back to polling every 2 s
    assert "last reload: ok" in out


async def test_plan_logs_unload_and_reload(
    tmp_path: Path,
    fake_server_bin: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = Profiles(fake_server_bin, tmp_path)
    served = write_set(tmp_path / "served", texts.text(BOTH))
    async with running_service(served, watch=False) as running:
        await wait_for(ready(running, "alpha", "beta"))
        url = ["--server", running.url]
        code, out, _ = await cli(capsys, "plan", *url)
        assert (code, out) == (0, "plan: nothing to do\n")

        code, out, _ = await cli(capsys, "logs", "alpha", "-n", "100", *url)
        assert code == 0
        assert "srv    load_model: loading model" in out and "alpha.gguf" in out
        code, out, _ = await cli(capsys, "logs", "alpha", "-n", "2", *url)
        assert code == 0 and len(out.splitlines()) == 2
        code, _, err = await cli(capsys, "logs", "nosuch", *url)
        assert code == 1 and "no model, alias, model@agent or sidecar key 'nosuch'" in err

        # a followed log ends (exit 0) when its sidecar stops
        beta_key = next(
            s.key for s in running.service.supervisor.statuses() if s.sidecar.model == "beta"
        )
        beta = running.service.supervisor.get(beta_key)
        assert beta is not None
        follow_logs = beta.follow_logs
        followers: list[LogFollower] = []

        def noting_followers(*, backlog: int = 0) -> LogFollower:
            followers.append(follow_logs(backlog=backlog))
            return followers[-1]

        monkeypatch.setattr(beta, "follow_logs", noting_followers)
        follow = asyncio.create_task(
            asyncio.to_thread(main, ["logs", "beta", "-f", "-n", "1", *url])
        )
        await wait_for(lambda: followers, what="the control API to follow beta's log")
        assert not follow.done()
        code, out, _ = await cli(capsys, "unload", "beta", *url)
        assert code == 0
        assert f"stopped {beta_key} (beta)" in out
        assert await asyncio.wait_for(follow, 10) == 0
        assert "beta" not in running.pids()

        code, _, err = await cli(capsys, "unload", "nosuch", *url)
        assert code == 1 and "no model or alias 'nosuch'" in err

        code, out, _ = await cli(capsys, "reload", *url)
        assert (code, out.split(":")[0]) == (0, "unchanged")
        (served / "p.yaml").write_text(texts.text({"alpha": "preload: true", "beta": "ttl: oops"}))
        code, _, err = await cli(capsys, "reload", *url)
        assert code == 1
        assert f"error: {served / 'p.yaml'}:" in err and "models.beta.ttl" in err
        (served / "p.yaml").write_text(texts.text({"alpha": "preload: true"}))
        code, out, _ = await cli(capsys, "reload", *url)
        assert code == 0 and out.startswith("reloaded: now serving revision")


async def test_api_keys_admin_scope_is_required(
    tmp_path: Path,
    fake_server_bin: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_LLAMASUP_ADMIN", ADMIN_KEY)
    monkeypatch.setenv("TEST_LLAMASUP_APP", INFERENCE_KEY)
    keys = (
        "api_keys:\n"
        "  - {name: ops, env: TEST_LLAMASUP_ADMIN, scope: admin}\n"
        "  - {name: app, env: TEST_LLAMASUP_APP, scope: inference}\n"
    )
    texts = Profiles(fake_server_bin, tmp_path)
    served = write_set(tmp_path / "served", texts.text({"alpha": ""}, server_extra=keys))
    async with running_service(served, watch=False, environ=dict(os.environ)) as running:
        url = ["--server", running.url]
        code, _, err = await cli(capsys, "status", *url)
        assert code == 2
        assert "missing API key" in err and "LLAMASUP_API_KEY" in err

        code, _, err = await cli(capsys, "status", "--api-key", INFERENCE_KEY, *url)
        assert code == 2
        assert "key 'app' lacks the admin scope" in err

        code, out, _ = await cli(capsys, "status", "--api-key", "wrong", "-o", "json", *url)
        assert code == 2
        assert json.loads(out) == {
            "error": f"{running.url}: invalid API key",
            "exit_code": 2,
        }

        monkeypatch.setenv("LLAMASUP_API_KEY", ADMIN_KEY)
        code, out, err = await cli(capsys, "status", *url)
        assert code == 0, err
        assert out.rstrip().endswith("no sidecars")
