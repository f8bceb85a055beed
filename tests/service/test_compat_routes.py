"""llama-swap's and llama.cpp router's routes on a running service (fake sidecars): the shapes
their tools read, who may call them, and the metrics scope; browser extensions as origins."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
from service_helpers import (
    chat,
    fake_profile,
    pid_alive,
    running_service,
    served_by,
    write_model_files,
)

from llamasup.errors import ProfileError
from llamasup.profiles.load import load_profiles
from llamasup.testing.poll import wait_for

pytestmark = pytest.mark.anyio


def _root(tmp_path: Path, fake_bin: Path, server_extra: str = "") -> Path:
    write_model_files(tmp_path, ["alpha", "beta"])
    root = tmp_path / "profiles"
    root.mkdir()
    models = {"alpha": "description: the first\nttl: 5m", "beta": "aliases: [b]"}
    (root / "p.yaml").write_text(
        fake_profile(fake_bin, tmp_path / "state", models, server_extra=server_extra)
    )
    return root


async def test_llama_swap_running_unload_and_logs(tmp_path: Path, fake_server_bin: Path) -> None:
    async with running_service(_root(tmp_path, fake_server_bin), watch=False) as running:
        client = running.client
        assert (await client.get("/running")).json() == {"running": []}
        alpha = served_by(await chat(client, "alpha"))
        beta = served_by(await chat(client, "b"))
        rows = (await client.get("/running")).json()["running"]
        assert [r["model"] for r in rows] == ["alpha", "beta"]
        first = rows[0]
        assert set(first) == {"model", "state", "cmd", "proxy", "ttl", "name", "description"}
        assert (first["state"], first["ttl"], first["description"]) == ("ready", 300, "the first")
        assert first["proxy"].startswith("http://127.0.0.1:")
        assert "--alias alpha" in first["cmd"]

        logs = await client.get("/logs")
        assert logs.status_code == 200
        assert "[alpha] " in logs.text and "[beta] " in logs.text
        assert "[llamasup] " in logs.text, "llamasup's own lines beside the sidecars'"

        reply = await client.post("/api/models/unload/alpha")
        assert (reply.status_code, reply.text) == (200, "OK")
        await wait_for(lambda: not pid_alive(alpha), what="alpha unloaded")
        assert pid_alive(beta)
        missing = await client.post("/api/models/unload/nope")
        assert missing.status_code == 404
        reply = await client.get("/unload")
        assert (reply.status_code, reply.text) == (200, "OK")
        await wait_for(lambda: not pid_alive(beta), what="beta unloaded")
        assert (await client.get("/running")).json() == {"running": []}
        assert (await client.post("/api/models/unload")).json() == {"msg": "ok"}
        wrong = await client.delete("/running")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"


async def test_a_log_stream_follows_a_model_until_the_client_leaves(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    async with running_service(_root(tmp_path, fake_server_bin), watch=False) as running:
        await chat(running.client, "alpha")
        lines: list[str] = []
        async with running.client.stream("GET", "/logs/stream/alpha?no-history") as stream:
            assert stream.status_code == 200
            reader = stream.aiter_lines()
            request = asyncio.create_task(chat(running.client, "alpha"))
            while not any("[alpha]" in line for line in lines):
                lines.append(await asyncio.wait_for(reader.__anext__(), 10))
            await request
        assert lines and all(line.startswith("[alpha] ") for line in lines)
        bad = await running.client.get("/logs/stream/nope")
        assert bad.status_code == 400
        assert "use 'proxy', 'upstream' or a model's id" in bad.json()["error"]["message"]


async def test_router_models_load_unload_and_props(tmp_path: Path, fake_server_bin: Path) -> None:
    async with running_service(_root(tmp_path, fake_server_bin), watch=False) as running:
        client = running.client

        async def status(name: str) -> dict[str, object]:
            listing = (await client.get("/models")).json()["data"]
            entry = next(e for e in listing if e["id"] == name)
            value: dict[str, object] = entry["status"]
            return value

        assert (await status("alpha"))["value"] == "unloaded"
        reply = await client.post("/models/load", json={"model": "alpha"})
        assert reply.json() == {"success": True}
        loaded: dict[str, object] = {}

        async def is_loaded() -> bool:
            loaded.update(await status("alpha"))
            return loaded["value"] == "loaded"

        deadline = asyncio.get_running_loop().time() + 15
        while not await is_loaded():
            assert asyncio.get_running_loop().time() < deadline, loaded
            await asyncio.sleep(0.02)  # polling a listing, as the router's clients do
        assert isinstance(loaded["args"], list) and "--alias" in loaded["args"]
        assert (await client.post("/models/unload", json={"model": "alpha"})).json() == {
            "success": True
        }
        again = await client.post("/models/unload", json={"model": "alpha"})
        assert again.status_code == 400
        assert again.json()["error"]["message"] == "model is not running"
        unknown = await client.post("/models/load", json={"model": "zeta"})
        assert (unknown.status_code, unknown.json()["error"]["message"]) == (
            400,
            "model is not found",
        )
        props = (await client.get("/props")).json()
        assert props["role"] == "router" and props["models_autoload"] is True


ADMIN, APP, SCRAPE = "sk-admin-0123456789", "sk-app-abcdef", "sk-scrape-42"
KEYS = """\
api_keys:
  - {name: ops, env: T_ADMIN, scope: admin}
  - {name: app, env: T_APP, scope: inference}
  - {name: prom, env: T_SCRAPE, scope: metrics}
"""


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.mark.parametrize("open_metrics", [False, True])
async def test_scopes_of_the_compatible_routes_and_a_metrics_only_key(
    tmp_path: Path, fake_server_bin: Path, open_metrics: bool
) -> None:
    extra = KEYS + ("open_metrics: true\n" if open_metrics else "")
    environ = {**os.environ, "T_ADMIN": ADMIN, "T_APP": APP, "T_SCRAPE": SCRAPE}
    root = _root(tmp_path, fake_server_bin, extra)
    async with running_service(root, watch=False, environ=environ) as running:
        client: httpx.AsyncClient = running.client
        for path in ("/running", "/logs"):
            assert (await client.get(path, headers=_bearer(APP))).status_code == 403
            assert (await client.get(path, headers=_bearer(ADMIN))).status_code == 200
        assert (await client.get("/unload", headers=_bearer(SCRAPE))).status_code == 403
        body = {"model": "alpha"}
        assert (
            await client.post("/models/load", json=body, headers=_bearer(APP))
        ).status_code == 200
        # a metrics key opens /metrics and nothing else
        assert (await client.get("/metrics", headers=_bearer(SCRAPE))).status_code == 200
        chat_body = {"model": "alpha", "messages": [{"role": "user", "content": "x"}]}
        denied = await client.post("/v1/chat/completions", json=chat_body, headers=_bearer(SCRAPE))
        assert denied.status_code == 403
        assert (await client.get("/api/status", headers=_bearer(SCRAPE))).status_code == 403
        anonymous = await client.get("/metrics")
        assert anonymous.status_code == (200 if open_metrics else 401)
        assert (await client.get("/running")).status_code == 401


def test_browser_extension_origins_validate_and_wildcards_do_not(tmp_path: Path) -> None:
    write_model_files(tmp_path, ["alpha"])
    path = tmp_path / "p.yaml"
    path.write_text(
        fake_profile(
            tmp_path / "llama-server",
            tmp_path / "state",
            {"alpha": ""},
            server_extra="cors_origins: [chrome-extension://abcdefghijklmnopabcdefghijklmnop, "
            "moz-extension://0d1c2b3a-4f5e-6d7c-8b9a-0f1e2d3c4b5a]",
        )
    )
    origins = load_profiles(path, {}).server.cors_origins
    assert origins == (
        "chrome-extension://abcdefghijklmnopabcdefghijklmnop",
        "moz-extension://0d1c2b3a-4f5e-6d7c-8b9a-0f1e2d3c4b5a",
    )
    path.write_text(
        path.read_text().replace("chrome-extension://abcdefghijklmnopabcdefghijklmnop", '"*"')
    )
    with pytest.raises(ProfileError, match="cors_origins"):
        load_profiles(path, {})
