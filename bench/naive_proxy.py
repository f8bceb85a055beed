"""A naive model proxy, the way one is usually written: Starlette + httpx, streamed through.

    python bench/naive_proxy.py --port PORT --upstream http://127.0.0.1:UPSTREAM

A peer in ``bench/bench_peers.py``: it reads the body, picks the upstream from ``model`` (one
here), forwards the request with httpx and streams the answer back as it arrives. Needs
``starlette`` (not a llamasup dependency: ``pip install starlette``).
"""

from __future__ import annotations

import argparse
import json

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding"}


def build(upstream: str) -> Starlette:
    client = httpx.AsyncClient(base_url=upstream, timeout=None)
    routes = {"bench": upstream}  # model -> upstream: the routing a real one would do

    async def forward(request: Request) -> Response:
        body = await request.body()
        model = json.loads(body).get("model") if body else None
        if model not in routes:
            return JSONResponse({"error": f"unknown model {model!r}"}, status_code=404)
        headers = {k: v for k, v in request.headers.items() if k not in _HOP}
        outbound = client.build_request(
            request.method, request.url.path, headers=headers, content=body
        )
        answer = await client.send(outbound, stream=True)
        out_headers = {k: v for k, v in answer.headers.items() if k not in _HOP}
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers=out_headers,
            background=BackgroundTask(answer.aclose),
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/chat/completions", forward, methods=["POST"]),
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ns = ap.parse_args()
    app = build(ns.upstream)
    uvicorn.run(
        app, host="127.0.0.1", port=ns.port, loop="uvloop", access_log=False, log_level="warning"
    )


if __name__ == "__main__":
    main()
