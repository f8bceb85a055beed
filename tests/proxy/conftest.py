"""Fixtures for the proxy tests: profiles on disk, a fake sidecar pool, a real uvicorn."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llamasup.profiles.load import load_profiles
from llamasup.profiles.types import Profiles
from llamasup.proxy.asgi import ASGIApp
from llamasup.proxy.hooks import ProxyObserver
from llamasup.spec.resolve import Resolver
from proxy.pool_fixture import FakeSidecarPool, ProxyServer
from proxy.proxy_profiles import PROFILE, ProfileLoader, ProxyFactory


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
        run_specs: bool = False,
        observer: ProxyObserver | None = None,
        fallback: ASGIApp | None = None,
        front: str = "llamasup",
        wrap: Callable[[ASGIApp], ASGIApp] | None = None,
    ) -> ProxyServer:
        pool = FakeSidecarPool(load_delay=load_delay, run_specs=run_specs)
        server = ProxyServer(
            Resolver(load_text(profile)),
            pool,
            observer=observer,
            fallback=fallback,
            front=front,
            wrap=wrap,
        )
        servers.append(server.start())
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def proxy(make_proxy: ProxyFactory) -> ProxyServer:
    return make_proxy()
