"""Profiles and fixture types shared by the proxy tests."""

from __future__ import annotations

from collections.abc import Callable

from llamasup.profiles.types import Profiles
from proxy.pool_fixture import ProxyServer

PROFILE = """
version: 1
server:
  start_timeout: 20s
models:
  alpha:
    path: /models/alpha.gguf
    args: [--reranking]  # serves /v1/embeddings and /v1/rerank too
    aliases: [a, first]
    description: the first model
  beta:
    path: /models/beta.gguf
    concurrency: 1
    queue: 1
  hidden:
    path: /models/hidden.gguf
    unlisted: true
agents:
  coder: {model: alpha, flags: --temp 0.2 --top-k 20 --n-predict 64}
  precise: {flags: --temp 0 --seed 42}
  bigctx: {flags: --ctx-size 8192}
"""

FLAGS_ENABLED = PROFILE.replace(
    "  start_timeout: 20s\n",
    "  start_timeout: 20s\n  agent_flags: {enabled: true, allow_load_flags: [--ctx-size]}\n",
)

ProfileLoader = Callable[[str], Profiles]
ProxyFactory = Callable[..., ProxyServer]
