"""Fixtures for the proxy tests: profiles on disk, a fake sidecar pool, a real uvicorn."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pool_fixture import FakeSidecarPool, ProxyServer

from llamasup.profiles import Profiles, load_profiles
from llamasup.proxy import ASGIApp
from llamasup.proxy_hooks import ProxyObserver
from llamasup.spec import Resolver

PROFILE = """
version: 1
server:
  start_timeout: 20s
models:
  alpha:
    path: /models/alpha.gguf
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


@pytest.fixture
def load_text(tmp_path: Path) -> ProfileLoader:
    counter = iter(range(1000))

    def load(text: str) -> Profiles:
        path = tmp_path / f"profiles-{next(counter)}.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return load_profiles(path, {})

    return load


@pytest.fixture
def make_proxy(load_text: ProfileLoader) -> Iterator[ProxyFactory]:
    servers: list[ProxyServer] = []

    def make(
        profile: str = PROFILE,
        *,
        load_delay: float = 0.0,
        observer: ProxyObserver | None = None,
        fallback: ASGIApp | None = None,
    ) -> ProxyServer:
        pool = FakeSidecarPool(load_delay=load_delay)
        server = ProxyServer(Resolver(load_text(profile)), pool, observer=observer,
                             fallback=fallback)
        servers.append(server.start())
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def proxy(make_proxy: ProxyFactory) -> ProxyServer:
    return make_proxy()
