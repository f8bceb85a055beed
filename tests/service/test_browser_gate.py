"""A web page cannot drive llamasup: cross-origin requests and DNS-rebinding hosts are refused
(the control API always; inference routes unless the origin is in server.cors_origins)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from service_helpers import chat, fake_profile, running_service, write_model_files

from llamasup.service.browser_gate import loopback_host

pytestmark = pytest.mark.anyio

EVIL = "http://evil.example"
APP = "http://localhost:3000"
CHAT = {"model": "alpha", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _alpha_profile(tmp_path: Path, fake_bin: Path, server_extra: str = "") -> Path:
    """One fake model, alpha, in ``p.yaml``."""
    write_model_files(tmp_path, ["alpha"])
    profile = tmp_path / "p.yaml"
    profile.write_text(
        fake_profile(fake_bin, tmp_path / "state", {"alpha": ""}, server_extra=server_extra)
    )
    return profile


def _refused(reply: httpx.Response, words: str) -> None:
    """A 403 from the browser gate, in the OpenAI envelope, with no CORS grant."""
    assert reply.status_code == 403, reply.text
    assert reply.headers["x-llamasup-error"] == "1"
    assert reply.json()["error"]["code"] == "forbidden_origin"
    assert words in reply.json()["error"]["message"]
    assert "access-control-allow-origin" not in reply.headers


async def test_a_web_page_cannot_apply_or_infer(tmp_path: Path, fake_server_bin: Path) -> None:
    """The attack: a page POSTs text/plain (no preflight) to the keyless loopback front."""
    profile = _alpha_profile(tmp_path, fake_server_bin)
    original = profile.read_text()
    evil = original + "  evil:\n    command: [sh, -c, 'touch /tmp/pwned; sleep 60 ${PORT}']\n"
    page = {"origin": EVIL, "content-type": "text/plain"}
    async with running_service(profile, watch=False) as running:
        client = running.client
        _refused(await client.post("/api/apply", content=evil, headers=page), "control API")
        assert profile.read_text() == original
        _refused(
            await client.post("/v1/chat/completions", json=CHAT, headers=page),
            "server.cors_origins",
        )
        _refused(await client.get("/health", headers={"origin": EVIL}), "web pages")
        anthropic = await client.post("/v1/messages", json=CHAT, headers=page)
        assert anthropic.status_code == 403
        assert anthropic.json()["type"] == "error"
        assert anthropic.json()["error"]["type"] == "permission_error"
        # DNS rebinding: the page's own host name, resolved to 127.0.0.1
        rebound = await client.get("/api/status", headers={"host": "evil.example:8402"})
        _refused(rebound, "'evil.example:8402' is not a name this llamasup answers to")
        # tools send no Origin and a loopback Host: unchanged
        assert (await client.get("/api/status")).status_code == 200
        await chat(client, "alpha", headers={"host": "localhost:8402"})


async def test_listed_origins_get_cors_on_inference_routes_only(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    extra = f"cors_origins: ['{APP}']\nallowed_hosts: [llm.example.org]\nallow_public_listen: true"
    profile = _alpha_profile(tmp_path, fake_server_bin, extra)
    async with running_service(profile, watch=False) as running:
        client = running.client
        # a reverse proxy on this machine passing its own name is listed, so it is let through
        proxied = await client.get("/api/status", headers={"host": "LLM.example.org:443"})
        assert proxied.status_code == 200, proxied.text
        rebound = await client.get("/api/status", headers={"host": "evil.example"})
        _refused(rebound, "server.allowed_hosts")
        preflight = await client.options(
            "/v1/chat/completions",
            headers={
                "origin": APP,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type, authorization",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == APP
        assert preflight.headers["access-control-allow-headers"] == "content-type, authorization"
        answer = await client.post("/v1/chat/completions", json=CHAT, headers={"origin": APP})
        assert answer.status_code == 200, answer.text
        # one grant, llamasup's: the sidecar's own reflection of the origin is dropped
        assert answer.headers.get_list("access-control-allow-origin") == [APP]
        # the passthrough reaches everything a sidecar serves: never granted to a page
        _refused(await client.get("/upstream/alpha/props", headers={"origin": APP}), "Origin")
        _refused(await client.get("/api/status", headers={"origin": APP}), "control API")
        _refused(await client.get("/metrics", headers={"origin": APP}), "control API")
        _refused(
            await client.post("/v1/chat/completions", json=CHAT, headers={"origin": EVIL}), "Origin"
        )


def test_loopback_host_names() -> None:
    for host in (b"127.0.0.1:8402", b"localhost", b"LOCALHOST:1", b"[::1]:8402", b"127.1.2.3",
                 b"localhost.:80", b"::1"):  # fmt: skip
        assert loopback_host(host), host
    for host in (b"evil.example", b"192.168.1.2:8402", b"[fe80::1]:80", b"localhost.evil.com",
                 b"app.localhost", b""):  # fmt: skip
        assert not loopback_host(host), host


async def test_what_browsers_send_without_an_origin_and_odd_headers(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    profile = _alpha_profile(tmp_path, fake_server_bin)
    async with running_service(profile, watch=False) as running:
        client = running.client
        # <img src=".../upstream/alpha/health">: no Origin on a GET, but Sec-Fetch-Site says
        image = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"}
        _refused(await client.get("/upstream/alpha/health", headers=image), "other web sites")
        assert running.pids() == {}  # nothing was started for it
        # a page llamasup served itself (a sidecar's UI through /upstream) is same-origin
        own = {"origin": running.url, "sec-fetch-site": "same-origin"}
        assert (
            await client.post("/v1/chat/completions", json=CHAT, headers=own)
        ).status_code == 200
        # ... but it reaches the control API only with a dashboard session (see
        # test_dashboard_security): a sidecar's UI has none
        no_session = await client.get("/api/status", headers=own)
        assert no_session.status_code == 401
        assert no_session.json()["error"]["code"] == "login_required"
        # two Origins (the last would win; the same goes for Host): refused
        two = [("origin", EVIL), ("origin", running.url)]
        _refused(await client.post("/v1/chat/completions", json=CHAT, headers=two), "more than")


async def test_without_keys_a_public_front_still_refuses_rebinding_hosts(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    profile = _alpha_profile(tmp_path, fake_server_bin)
    async with running_service(
        profile, watch=False, listen=("0.0.0.0", 8402), allow_public=True
    ) as running:
        _refused(await running.client.get("/api/status", headers={"host": "evil.example"}), "Host")
        by_address = await running.client.get("/api/status", headers={"host": "192.168.1.5:8402"})
        assert by_address.status_code == 200  # an address cannot be a rebinding page's name
