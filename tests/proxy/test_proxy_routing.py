"""Routing, resolution, body rewriting and error envelopes, through a real uvicorn."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from llamasup.proxy.asgi import Receive, Scope, Send
from llamasup.reconcile.pool import Origin
from llamasup.spec.resolve import Resolver
from proxy.pool_fixture import ProxyServer
from proxy.proxy_profiles import FLAGS_ENABLED, PROFILE, ProfileLoader, ProxyFactory


def post(
    proxy: ProxyServer, path: str, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(proxy.url + path, content=content, headers=headers or {}, timeout=30)


def echoed(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    echo: dict[str, Any] = response.json()["x_fake"]
    return echo


def key_of(proxy: ProxyServer, model: str, agent: str | None = None) -> str:
    return proxy.resolver.resolve(model, agent).spec.key


def assert_llamasup_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["x-llamasup-error"] == "1"
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert set(error) >= {"message", "type", "code"}
    return error


MESSAGES = [{"role": "user", "content": "hi"}]


def test_routes_by_id_alias_agent_and_headers(proxy: ProxyServer) -> None:
    alpha = key_of(proxy, "alpha")
    by_id = echoed(post(proxy, "/v1/chat/completions", {"model": "alpha", "messages": MESSAGES}))
    assert by_id["body"]["model"] == "alpha"
    assert by_id["path"] == "/v1/chat/completions"

    by_alias = echoed(post(proxy, "/v1/chat/completions", {"model": "a", "messages": MESSAGES}))
    assert by_alias["body"]["model"] == "alpha"  # rewritten to the served name

    with_agent = echoed(
        post(proxy, "/v1/chat/completions", {"model": "alpha@coder", "messages": MESSAGES})
    )
    assert with_agent["body"]["model"] == "alpha"
    assert with_agent["body"]["temperature"] == 0.2
    assert with_agent["body"]["top_k"] == 20
    assert with_agent["body"]["n_predict"] == 64

    by_header = echoed(
        post(
            proxy,
            "/v1/chat/completions",
            {"model": "alpha", "messages": []},
            {"X-Agent": "precise"},
        )
    )
    assert by_header["body"]["temperature"] == 0.0 and by_header["body"]["seed"] == 42

    # an agent bound to a model selects it without any model in the body
    by_agent_only = echoed(
        post(proxy, "/v1/chat/completions", {"messages": []}, {"X-Agent": "coder"})
    )
    assert by_agent_only["body"]["model"] == "alpha"

    # X-Model-Id overrides body.model, and may carry an agent
    overridden = echoed(
        post(proxy, "/v1/chat/completions", {"model": "alpha"}, {"X-Model-Id": "beta@precise"})
    )
    assert overridden["body"]["model"] == "beta" and overridden["body"]["seed"] == 42

    # request-time flags only: every alpha variant above shared one sidecar
    assert proxy.pool.starts[alpha] == 1
    assert proxy.pool.starts[key_of(proxy, "beta")] == 1
    # llamasup's routing headers are not forwarded to the sidecar
    assert "x-agent" not in by_header["headers"]
    assert "x-model-id" not in overridden["headers"]


def test_load_time_agent_gets_its_own_sidecar(proxy: ProxyServer) -> None:
    plain = key_of(proxy, "alpha")
    big = key_of(proxy, "alpha", "bigctx")
    assert plain != big
    echoed(post(proxy, "/v1/completions", {"model": "alpha", "prompt": "x"}))
    echoed(post(proxy, "/v1/completions", {"model": "alpha@bigctx", "prompt": "x"}))
    assert proxy.pool.starts[plain] == 1 and proxy.pool.starts[big] == 1


def test_client_values_win_over_agent_defaults(proxy: ProxyServer) -> None:
    body = echoed(
        post(
            proxy,
            "/v1/chat/completions",
            {"model": "alpha@coder", "temperature": 0.9, "max_tokens": 5},
        )
    )["body"]
    assert body["temperature"] == 0.9
    assert body["top_k"] == 20
    assert body["max_tokens"] == 5
    # llama-server lets n_predict override max_tokens: never add it when the client set either
    assert "n_predict" not in body
    body = echoed(
        post(proxy, "/v1/chat/completions", {"model": "alpha@coder", "max_completion_tokens": 7})
    )["body"]
    assert "n_predict" not in body
    body = echoed(
        post(proxy, "/v1/chat/completions", {"model": "alpha@coder", "n_predict": 3, "top_k": None})
    )["body"]
    assert body["n_predict"] == 3
    assert body["top_k"] == 20  # an explicit null counts as unset


def test_unchanged_body_is_forwarded_byte_for_byte(proxy: ProxyServer) -> None:
    raw = b'{ "model" : "alpha",\n  "prompt": "caf\\u00e9",   "extra": [1, 2.50] }'
    echo = echoed(post(proxy, "/v1/completions", raw))
    assert echo["raw_len"] == len(raw)
    assert echo["body"] == json.loads(raw)


def test_large_body_is_edited_in_place(proxy: ProxyServer) -> None:
    messages = [{"role": "user", "content": "ünïcode " * 2000}]
    raw = json.dumps(
        {"messages": messages, "model": "alpha@coder", "top_k": 3}, ensure_ascii=False, indent=1
    ).encode()
    body = echoed(post(proxy, "/v1/chat/completions", raw))["body"]
    assert body == {
        "messages": messages,
        "model": "alpha",
        "top_k": 3,
        "temperature": 0.2,
        "n_predict": 64,
    }


def test_routes_a_model_is_not_started_for_are_refused_with_the_fix(proxy: ProxyServer) -> None:
    for path, flag in (("/v1/embeddings", "--embeddings"), ("/rerank", "--reranking")):
        refused = assert_llamasup_error(
            post(proxy, path, {"model": "beta", "input": "x"}), 400, "endpoint_not_enabled"
        )
        assert f"not started with {flag}" in refused["message"]
        assert "models.beta.args" in refused["message"]


def test_sampling_defaults_only_on_generation_routes(proxy: ProxyServer) -> None:
    body = echoed(post(proxy, "/v1/embeddings", {"model": "alpha@coder", "input": "x"}))["body"]
    assert body == {"model": "alpha", "input": "x"}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/rerank",
        "/rerank",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/completion",
        "/infill",
        "/tokenize",
        "/detokenize",
        "/apply-template",
    ],
)
def test_forwarded_routes(proxy: ProxyServer, path: str) -> None:
    echo = echoed(post(proxy, path, {"model": "first", "content": "x"}))
    assert echo["path"] == path
    assert echo["method"] == "POST"
    assert echo["body"]["model"] == "alpha"


def test_upstream_passthrough_any_method(proxy: ProxyServer) -> None:
    got = httpx.get(proxy.url + "/upstream/alpha/props?verbose=1", timeout=30)
    echo = echoed(got)
    assert echo["method"] == "GET" and echo["path"] == "/props?verbose=1"
    raw = b'{"model": "untouched", "x": 1}'
    echo = echoed(httpx.put(proxy.url + "/upstream/a@coder/slots/0", content=raw, timeout=30))
    assert echo["method"] == "PUT" and echo["path"] == "/slots/0"
    assert echo["raw_len"] == len(raw)  # passthrough never rewrites
    missing = httpx.get(proxy.url + "/upstream/nope/props", timeout=30)
    assert_llamasup_error(missing, 404, "model_not_found")


def test_model_listing(proxy: ProxyServer) -> None:
    listing = httpx.get(proxy.url + "/v1/models", timeout=30).json()
    entries = {e["id"]: e for e in listing["data"]}
    assert {
        "alpha",
        "a",
        "first",
        "beta",
        "alpha@coder",
        "alpha@precise",
        "alpha@bigctx",
        "beta@precise",
        "beta@bigctx",
    } == set(entries)
    assert "hidden" not in entries and "beta@coder" not in entries
    assert entries["a"]["llamasup"]["alias_of"] == "alpha"
    assert entries["alpha"]["llamasup"]["state"] == "stopped"
    echoed(post(proxy, "/v1/completions", {"model": "alpha"}))
    listing = httpx.get(proxy.url + "/v1/models", timeout=30).json()
    states = {e["id"]: e["llamasup"]["state"] for e in listing["data"]}
    assert states["alpha"] == "ready" and states["alpha@coder"] == "ready"
    assert states["alpha@bigctx"] == "stopped"  # a different sidecar
    # unlisted models are hidden, not unroutable
    echoed(post(proxy, "/v1/completions", {"model": "hidden"}))
    # one entry, as SDKs' models.retrieve asks for it
    for name in ("alpha", "a", "alpha@coder"):
        one = httpx.get(f"{proxy.url}/v1/models/{name}", timeout=30)
        # the state (llamasup's and the router-style status) changed since the listing
        assert one.status_code == 200 and one.json() == entries[name] | {
            "llamasup": one.json()["llamasup"],
            "status": one.json()["status"],
        }
        assert one.json()["status"]["value"] == "loaded"
    assert_llamasup_error(httpx.get(proxy.url + "/v1/models/hidden"), 404, "model_not_found")


def test_health_and_unknown_paths(proxy: ProxyServer) -> None:
    assert httpx.get(proxy.url + "/health").json() == {"status": "ok"}
    assert_llamasup_error(httpx.get(proxy.url + "/nope"), 404, "not_found")
    for method, path, allow in (
        ("GET", "/v1/chat/completions", "POST"),
        ("GET", "/v1/messages", "POST"),
        ("POST", "/v1/models", "GET, HEAD"),
        ("DELETE", "/v1/models/alpha", "GET, HEAD"),
        ("POST", "/health", "GET, HEAD"),
    ):
        wrong = httpx.request(method, proxy.url + path)
        assert wrong.status_code == 405, (method, path)
        assert wrong.headers["allow"] == allow


def test_unknown_paths_fall_through(make_proxy: ProxyFactory) -> None:
    async def control_api(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"control " + scope["path"].encode()})

    proxy = make_proxy(fallback=control_api)
    assert httpx.get(proxy.url + "/api/status").text == "control /api/status"
    assert httpx.get(proxy.url + "/health").json() == {"status": "ok"}


def test_resolution_errors(proxy: ProxyServer) -> None:
    unknown = assert_llamasup_error(
        post(proxy, "/v1/chat/completions", {"model": "gpt-9"}), 404, "model_not_found"
    )
    assert "gpt-9" in unknown["message"]
    for valid in ("alpha", "beta"):
        assert valid in unknown["message"]
    assert "hidden" not in unknown["message"]
    assert_llamasup_error(
        post(proxy, "/v1/chat/completions", {"model": "alpha@nobody"}), 404, "agent_not_found"
    )
    assert_llamasup_error(
        post(proxy, "/v1/chat/completions", {"messages": []}), 400, "model_required"
    )
    modelless = assert_llamasup_error(
        post(proxy, "/v1/chat/completions", {"model": "@precise"}), 400, "model_required"
    )
    assert "agent 'precise' has no model of its own" in modelless["message"]
    assert '"MODEL@precise"' in modelless["message"]
    conflict = assert_llamasup_error(
        post(proxy, "/v1/chat/completions", {"model": "alpha@coder"}, {"X-Agent": "precise"}),
        400,
        "agent_conflict",
    )
    assert "coder" in conflict["message"] and "precise" in conflict["message"]
    assert_llamasup_error(
        post(proxy, "/v1/chat/completions", b'{"model": "alpha",'), 400, "invalid_json"
    )
    assert_llamasup_error(post(proxy, "/v1/chat/completions", b"[1, 2]"), 400, "invalid_json")
    nested = b'{"model": "alpha", "messages": ' + b"[" * 1400 + b"]" * 1400 + b"}"
    for deep in (nested, nested + b" " * 4096):  # both body paths (see body.SPLICE_FROM)
        error = assert_llamasup_error(
            post(proxy, "/v1/chat/completions", deep), 400, "invalid_json"
        )
        assert "nested too deeply" in error["message"]
    assert_llamasup_error(post(proxy, "/v1/chat/completions", {"model": 7}), 400, "invalid_model")
    assert sum(proxy.pool.starts.values()) == 0


def test_anthropic_routes_get_anthropic_errors(proxy: ProxyServer) -> None:
    response = post(proxy, "/v1/messages", {"model": "gpt-9", "max_tokens": 5})
    assert response.status_code == 404
    assert response.headers["x-llamasup-error"] == "1"
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert "gpt-9" in body["error"]["message"]


def test_body_size_limit(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy(PROFILE.replace("start_timeout: 20s", "max_request_body: 1KiB"))
    ok = post(proxy, "/v1/completions", {"model": "alpha", "prompt": "x" * 900})
    assert ok.status_code == 200
    big = post(proxy, "/v1/completions", {"model": "alpha", "prompt": "x" * 2000})
    error = assert_llamasup_error(big, 413, "request_too_large")
    assert "1024" in error["message"]

    def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
        yield b'{"model": "alpha", "prompt": "'
        for _ in range(10):
            yield b"y" * 200
        yield b'"}'

    streamed = httpx.post(proxy.url + "/v1/completions", content=chunks(), timeout=30)
    assert_llamasup_error(streamed, 413, "request_too_large")


def test_agent_flags_refused_by_default(proxy: ProxyServer) -> None:
    response = post(
        proxy, "/v1/chat/completions", {"model": "alpha"}, {"X-Agent-Flags": "--temp 0.3"}
    )
    error = assert_llamasup_error(response, 400, "agent_flags_disabled")
    assert error["param"] == "X-Agent-Flags"


@pytest.mark.parametrize(
    ("header", "flag"),
    [
        ("--host 0.0.0.0", "--host"),
        ("--port 9999", "--port"),
        ("-m /etc/passwd", "-m"),
        ("--model /tmp/x.gguf", "--model"),
        ("--api-key-file /tmp/k", "--api-key-file"),
        ("--log-file /tmp/log", "--log-file"),
        ("--bogus-flag 1", "--bogus-flag"),
        ("--n-gpu-layers 10", "--n-gpu-layers"),  # load-time and not in allow_load_flags
        ("--temp 0.3; rm -rf /", ";"),
        ("--temp $(reboot)", "$"),
        ("--temp `id`", "`"),
        # values llama-server would crash on (allow-listed flag, out of its range)
        ("--ctx-size -5", "--ctx-size"),
        ("--ctx-size 1", "--ctx-size"),
        ("--ctx-size 99999999999999999999", "--ctx-size"),
    ],
)
def test_agent_flags_refusals(make_proxy: ProxyFactory, header: str, flag: str) -> None:
    proxy = make_proxy(FLAGS_ENABLED)
    response = post(proxy, "/v1/chat/completions", {"model": "alpha"}, {"X-Agent-Flags": header})
    error = assert_llamasup_error(response, 400, "invalid_agent_flags")
    assert flag in error["message"]
    assert sum(proxy.pool.starts.values()) == 0


def test_agent_flags_accepted_when_enabled(make_proxy: ProxyFactory) -> None:
    proxy = make_proxy(FLAGS_ENABLED)
    body = echoed(
        post(
            proxy,
            "/v1/chat/completions",
            {"model": "alpha@coder"},
            {"X-Agent-Flags": "--temp 0.3 --min-p 0.1"},
        )
    )["body"]
    assert body["temperature"] == 0.3 and body["min_p"] == 0.1 and body["top_k"] == 20
    assert (
        "x-agent-flags"
        not in echoed(
            post(proxy, "/v1/completions", {"model": "alpha"}, {"X-Agent-Flags": "--temp 1"})
        )["headers"]
    )
    # an allowed load-time flag makes a sidecar of its own
    echoed(post(proxy, "/v1/completions", {"model": "a@bigctx"}, {"X-Agent-Flags": "-c 2048"}))
    assert len(proxy.pool.starts) == 2
    # ...and the pool learns how it was asked for, to re-resolve it after a reload
    (origin,) = (o for k, o in proxy.pool.origins.items() if k != key_of(proxy, "alpha"))
    assert origin == Origin("alpha", "bigctx", ("-c 2048",))


def test_profile_reload_applies_to_next_request(
    proxy: ProxyServer, load_text: ProfileLoader
) -> None:
    assert_llamasup_error(
        post(proxy, "/v1/completions", {"model": "gamma"}), 404, "model_not_found"
    )
    proxy.resolver = Resolver(
        load_text(
            PROFILE.replace("  hidden:\n", "  gamma:\n    path: /models/gamma.gguf\n  hidden:\n")
        )
    )
    assert echoed(post(proxy, "/v1/completions", {"model": "gamma"}))["body"]["model"] == "gamma"
