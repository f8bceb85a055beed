"""API keys on a running service (who may call what, and the error shapes), how key values
are read, and the two start-up checks of ``serve``: exposure without keys and sd_notify."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import chat, fake_profile, running_service, write_model_files

from llamasup.profiles.load import load_profiles
from llamasup.profiles.types import ApiKeyConfig, Source
from llamasup.service.auth import (
    ApiKey,
    ApiKeyError,
    load_keys,
    match,
    presented_key,
    required_scope,
)
from llamasup.service.serve import ServeError, check_exposure, sd_notify

pytestmark = pytest.mark.anyio

ADMIN = "sk-admin-0123456789"
INFERENCE = "sk-app-abcdef"

KEYS_YAML = """\
api_keys:
  - {name: ops, env: TEST_LLAMASUP_ADMIN_KEY, scope: admin}
  - {name: app, file: app.key, scope: inference}
"""

CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "alpha", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


def _profiles_with_keys(tmp_path: Path, fake_bin: Path) -> Path:
    write_model_files(tmp_path, ["alpha"])
    root = tmp_path / "profiles"
    root.mkdir()
    (root / "p.yaml").write_text(
        fake_profile(fake_bin, tmp_path / "state", {"alpha": ""}, server_extra=KEYS_YAML)
    )
    # the key file sits next to the profile (relative paths are anchored there); the value is
    # its first line, surrounding whitespace ignored
    (root / "app.key").write_text(f"  {INFERENCE}  \n")
    return root


def _environ() -> dict[str, str]:
    return {**os.environ, "TEST_LLAMASUP_ADMIN_KEY": ADMIN}


def _assert_llamasup_error(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["x-llamasup-error"] == "1"
    assert reply.headers["content-type"] == "application/json"
    body: dict[str, Any] = reply.json()
    return body


async def test_scopes_and_error_shapes(tmp_path: Path, fake_server_bin: Path) -> None:
    root = _profiles_with_keys(tmp_path, fake_server_bin)
    async with running_service(root, watch=False, environ=_environ()) as running:
        client = running.client
        health = await client.get("/health")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})

        for path in ("/v1/chat/completions", "/api/status"):
            method = "POST" if path.startswith("/v1") else "GET"
            denied = await client.request(method, path, json=CHAT)
            body = _assert_llamasup_error(denied, 401)
            assert set(body["error"]) == {"message", "type", "code"}
            assert body["error"]["type"] == "authentication_error"
            assert body["error"]["code"] == "invalid_api_key"
            assert denied.headers["www-authenticate"].startswith("Bearer")
        anthropic = _assert_llamasup_error(await client.post("/v1/messages", json=MESSAGES), 401)
        assert anthropic["type"] == "error"
        assert anthropic["error"]["type"] == "authentication_error"
        assert anthropic["error"]["message"]
        wrong = await client.post(
            "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer nope"}
        )
        assert _assert_llamasup_error(wrong, 401)["error"]["message"] == "invalid API key"
        basic = await client.get("/api/status", headers={"authorization": f"Basic {ADMIN}"})
        assert basic.status_code == 401  # only the Bearer scheme carries a key

        as_app = {"authorization": f"Bearer {INFERENCE}"}
        reply = await chat(client, "alpha", headers=as_app)
        # the front's key is llamasup's, not the sidecar's: it is not forwarded; the sidecar
        # gets the per-run key that only llamasup holds
        sent = reply["x_fake"]["headers"]["authorization"]
        assert INFERENCE not in sent
        [sidecar] = running.service.supervisor.sidecars()
        assert [(b"authorization", sent.encode())] == list(sidecar.auth_headers)
        messages = await client.post("/v1/messages", json=MESSAGES, headers=as_app)
        assert messages.status_code == 200, messages.text
        assert (await client.get("/v1/models", headers=as_app)).status_code == 200
        for path in ("/api/status", "/metrics", "/sidecars", "/api/plan"):
            refused = _assert_llamasup_error(await client.get(path, headers=as_app), 403)
            assert refused["error"]["type"] == "permission_error"
            assert refused["error"]["code"] == "insufficient_scope"
            assert "'app'" in refused["error"]["message"]
        forbidden = await client.post("/api/unload", json={"all": True}, headers=as_app)
        assert forbidden.status_code == 403
        assert running.pids().get("alpha")  # the refused unload did nothing

        for headers in ({"authorization": f"Bearer {ADMIN}"}, {"x-api-key": ADMIN}):
            for path in ("/api/status", "/metrics", "/sidecars", "/api/plan", "/v1/models"):
                allowed = await client.get(path, headers=headers)
                assert allowed.status_code == 200, (path, headers)
            await chat(client, "alpha", headers=headers)
        by_x_api_key = await client.post(
            "/v1/messages", json=MESSAGES, headers={"x-api-key": INFERENCE}
        )
        assert by_x_api_key.status_code == 200
        status = (await client.get("/api/status", headers={"x-api-key": ADMIN})).json()
        assert status["profiles"]["auth_error"] is None


# --- key values -------------------------------------------------------------------------------


def _config(name: str, *, env: str | None = None, file: Path | None = None) -> ApiKeyConfig:
    return ApiKeyConfig(name, "admin", env, file, Source("/etc/llamasup/p.yaml", 7))


def test_load_keys_reads_env_and_the_first_line_of_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    key_file.write_text("\n".join(["  from-file ", "a comment line that is not part of it", ""]))
    keys = load_keys(
        [_config("a", env="KEY_A"), _config("b", file=key_file)], {"KEY_A": " from-env\n"}
    )
    assert keys == (ApiKey("a", "admin", b"from-env"), ApiKey("b", "admin", b"from-file"))
    assert "from-env" not in repr(keys)  # secrets never reach logs through repr


@pytest.mark.parametrize(
    ("environ", "content", "expected"),
    [
        ({}, None, "environment variable MISSING_KEY is not set"),
        ({"MISSING_KEY": "  "}, None, "environment variable MISSING_KEY is empty"),
        ({}, "", "is empty"),
        ({}, "\n\n", "is empty"),
    ],
)
def test_load_keys_names_the_key_it_cannot_use(
    tmp_path: Path, environ: dict[str, str], content: str | None, expected: str
) -> None:
    if content is None:
        config = _config("ops", env="MISSING_KEY")
    else:
        (tmp_path / "empty.key").write_text(content)
        config = _config("ops", file=tmp_path / "empty.key")
    with pytest.raises(ApiKeyError) as caught:
        load_keys([config], environ)
    message = str(caught.value)
    assert "api key 'ops'" in message
    assert "/etc/llamasup/p.yaml" in message
    assert expected in message


def test_load_keys_refuses_one_value_for_two_keys(tmp_path: Path) -> None:
    (tmp_path / "ops.key").write_text("sk-same\n")
    app = ApiKeyConfig("app", "inference", "APP_KEY", None, Source("/etc/llamasup/p.yaml", 9))
    with pytest.raises(ApiKeyError, match="'ops' and 'app' have the same value"):
        load_keys([_config("ops", file=tmp_path / "ops.key"), app], {"APP_KEY": "sk-same"})


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_load_keys_unreadable_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "key"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(ApiKeyError) as caught:
        load_keys([_config("ops", file=path)], {})
    assert f"api key 'ops': cannot read key file {path}" in str(caught.value)


def test_match_compares_against_every_key() -> None:
    keys = [ApiKey("a", "admin", b"alpha-key"), ApiKey("b", "inference", b"beta-key")]
    assert match(keys, b"beta-key") == keys[1]
    assert match(keys, b"alpha-key") == keys[0]
    assert match(keys, b"alpha-ke") is None
    assert match(keys, b"alpha-key ") is None
    assert match(keys, b"") is None
    assert match([], b"alpha-key") is None


def test_presented_key_and_required_scope() -> None:
    assert presented_key([(b"authorization", b"Bearer  k1 ")]) == b"k1"
    assert presented_key([(b"authorization", b"bearer k1")]) == b"k1"
    assert presented_key([(b"x-api-key", b" k2 ")]) == b"k2"
    assert presented_key([(b"authorization", b"Basic k1")]) is None
    assert presented_key([(b"authorization", b"Bearer ")]) is None
    assert presented_key([]) is None
    assert required_scope("/health") is None
    assert required_scope("/api/status") == "admin"
    assert required_scope("/sidecars/abc") == "admin"
    assert required_scope("/metrics") == "metrics"
    assert required_scope("/metrics", open_metrics=True) is None
    assert required_scope("/running") == required_scope("/logs/stream/alpha") == "admin"
    assert required_scope("/models/load") == "inference"
    assert required_scope("/v1/chat/completions") == "inference"
    assert required_scope("/v1/messages") == "inference"


# --- serve: exposure and systemd --------------------------------------------------------------


def _loopback_profiles(tmp_path: Path, fake_bin: Path, server_extra: str = "") -> Path:
    write_model_files(tmp_path, ["alpha"])
    path = tmp_path / "p.yaml"
    path.write_text(
        fake_profile(fake_bin, tmp_path / "state", {"alpha": ""}, server_extra=server_extra)
    )
    return path


def test_check_exposure(tmp_path: Path, fake_server_bin: Path) -> None:
    (tmp_path / "a").mkdir()
    plain = load_profiles(_loopback_profiles(tmp_path / "a", fake_server_bin), {})
    for host in ("127.0.0.1", "::1", "[::1]", "localhost"):
        check_exposure(plain, host, allow_public=False)
    for host in ("0.0.0.0", "192.168.1.10", "::"):
        with pytest.raises(ServeError, match=f"refusing to listen on {host} without API keys"):
            check_exposure(plain, host, allow_public=False)
        check_exposure(plain, host, allow_public=True)

    (tmp_path / "b").mkdir()
    keyed = load_profiles(_loopback_profiles(tmp_path / "b", fake_server_bin, KEYS_YAML), {})
    check_exposure(keyed, "0.0.0.0", allow_public=False)
    (tmp_path / "c").mkdir()
    allowed = load_profiles(
        _loopback_profiles(tmp_path / "c", fake_server_bin, "allow_public_listen: true"), {}
    )
    check_exposure(allowed, "0.0.0.0", allow_public=False)


def test_sd_notify_sends_to_notify_socket(tmp_path: Path) -> None:
    address = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(address))
        receiver.settimeout(5)
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(address)}) is True
        assert receiver.recv(1024) == b"READY=1"
        assert sd_notify("STOPPING=1", {"NOTIFY_SOCKET": str(address)}) is True
        assert receiver.recv(1024) == b"STOPPING=1"


def test_sd_notify_abstract_socket() -> None:
    name = f"llamasup-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(5)
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": "@" + name}) is True
        assert receiver.recv(1024) == b"READY=1"


def test_sd_notify_without_or_with_a_dead_socket(tmp_path: Path) -> None:
    assert sd_notify("READY=1", {}) is False
    assert sd_notify("READY=1", {"NOTIFY_SOCKET": ""}) is False
    assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody.sock")}) is False


# --- keys over the life of a running service ----------------------------------------------------


def _admin(key: str = ADMIN) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_a_reload_re_reads_a_rotated_key_file(tmp_path: Path, fake_server_bin: Path) -> None:
    root = _profiles_with_keys(tmp_path, fake_server_bin)
    async with running_service(root, watch=False, environ=_environ()) as running:
        client = running.client
        await chat(client, "alpha", headers={"x-api-key": INFERENCE})
        (root / "app.key").write_text("sk-app-rotated\n")
        # the profile text is the same, so the revision is too; the key's value is not
        assert (await running.service.reload("sighup")).result == "unchanged"
        old = await client.post("/v1/chat/completions", json=CHAT, headers=_admin(INFERENCE))
        _assert_llamasup_error(old, 401)
        await chat(client, "alpha", headers={"x-api-key": "sk-app-rotated"})

        (root / "app.key").write_text("")  # an unusable key file keeps the keys in force
        assert (await running.service.reload("sighup")).result == "unchanged"
        await chat(client, "alpha", headers={"x-api-key": "sk-app-rotated"})
        status = (await client.get("/api/status", headers=_admin())).json()
        assert "app.key is empty" in status["profiles"]["auth_error"]
        assert "previous keys stay in force" in status["profiles"]["auth_error"]


@pytest.mark.parametrize("how", ["reload", "apply"])
async def test_an_exposed_front_never_loses_its_last_key(
    tmp_path: Path, fake_server_bin: Path, how: str
) -> None:
    root = _profiles_with_keys(tmp_path, fake_server_bin)
    state = tmp_path / "state"
    with_keys = (root / "p.yaml").read_text()
    without = fake_profile(fake_server_bin, state, {"alpha": "", "beta": ""})
    write_model_files(tmp_path, ["beta"])
    async with running_service(
        root, watch=False, environ=_environ(), listen=("0.0.0.0", 8402)
    ) as running:
        client = running.client
        revision = running.service.profiles.revision
        if how == "reload":
            (root / "p.yaml").write_text(without)
            result = await running.service.reload("watch")
            assert result.result == "error"
            [issue] = result.errors
            message = issue.message
        else:
            reply = await client.post(
                "/api/apply", json={"files": {"p.yaml": without}}, headers=_admin()
            )
            assert reply.status_code == 422, reply.text
            [error] = reply.json()["errors"]
            message = error["message"]
            assert (root / "p.yaml").read_text() == with_keys  # nothing was written
            dry = await client.post(
                "/api/apply?dry_run=1", json={"files": {"p.yaml": without}}, headers=_admin()
            )
            assert dry.status_code == 422, dry.text  # a dry run says what the apply would
            assert dry.json()["errors"][0]["path"] == "server.api_keys"
        assert "0.0.0.0" in message and "removes every API key" in message
        assert running.service.profiles.revision == revision  # beta did not arrive either
        _assert_llamasup_error(await client.post("/v1/chat/completions", json=CHAT), 401)
        _assert_llamasup_error(await client.get("/api/status"), 401)

        # saying so explicitly is accepted, as it is at startup
        trusted = without.replace("server:\n", "server:\n  allow_public_listen: true\n")
        (root / "p.yaml").write_text(trusted)
        assert (await running.service.reload("watch")).result == "ok"
        assert (await client.get("/api/status")).status_code == 200


async def test_allow_public_lets_an_exposed_front_drop_its_keys(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    root = _profiles_with_keys(tmp_path, fake_server_bin)
    async with running_service(
        root, watch=False, environ=_environ(), listen=("0.0.0.0", 8402), allow_public=True
    ) as running:
        (root / "p.yaml").write_text(
            fake_profile(fake_server_bin, tmp_path / "state", {"alpha": ""})
        )
        assert (await running.service.reload("watch")).result == "ok"
        assert (await running.client.get("/api/status")).status_code == 200


async def test_an_unchanged_apply_also_re_reads_key_files(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    root = _profiles_with_keys(tmp_path, fake_server_bin)
    text = (root / "p.yaml").read_text()
    async with running_service(root, watch=False, environ=_environ()) as running:
        (root / "app.key").write_text("sk-app-rotated\n")
        reply = await running.client.post(
            "/api/apply", json={"files": {"p.yaml": text}}, headers=_admin()
        )
        assert (reply.status_code, reply.json()["result"]) == (200, "unchanged")
        await chat(running.client, "alpha", headers={"x-api-key": "sk-app-rotated"})


async def test_a_loopback_front_may_drop_its_keys(tmp_path: Path, fake_server_bin: Path) -> None:
    root = _profiles_with_keys(tmp_path, fake_server_bin)
    async with running_service(root, watch=False, environ=_environ()) as running:
        (root / "p.yaml").write_text(
            fake_profile(fake_server_bin, tmp_path / "state", {"alpha": ""})
        )
        assert (await running.service.reload("watch")).result == "ok"
        assert (await running.client.get("/api/status")).status_code == 200
