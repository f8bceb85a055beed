"""``local_models``: sidecars for the life of a program, with the fake llama-server."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path

import httpx
import pytest
from service_helpers import (
    fake_profile,
    pid_alive,
    port_range,
    reconcile_passes,
    write_model_files,
)

from llamasup import library
from llamasup.errors import UnknownModelError
from llamasup.library import local_models
from llamasup.profiles.load import load_profiles
from llamasup.reconcile.reconciler import Reconciler
from llamasup.testing.poll import wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _profile(tmp_path: Path, fake_server_bin: Path) -> Path:
    write_model_files(tmp_path, ["alpha", "beta"])
    path = tmp_path / "profiles.yaml"
    path.write_text(
        fake_profile(
            fake_server_bin,
            tmp_path / "state",
            {"alpha": "", "beta": ""},
            agents="precise: --temp 0 --top-k 1\nbig: --ctx-size 1024",
        )
    )
    return path


async def test_lazy_start_warm_reuse_and_cleanup(tmp_path: Path, fake_server_bin: Path) -> None:
    async with local_models(_profile(tmp_path, fake_server_bin)) as models:
        assert models.profiles.models.keys() == {"alpha", "beta"}
        reconciler = models._reconciler
        await wait_for(lambda: reconciler.status.passes >= 1, what="the first reconcile pass")
        async with httpx.AsyncClient(trust_env=False) as client:

            async def pid_of(target: str) -> int:
                async with models.lease(target) as sidecar:
                    body = {
                        **sidecar.defaults,
                        "model": sidecar.model,
                        "messages": [{"role": "user", "content": "hi"}],
                    }
                    url = f"{sidecar.url}/v1/chat/completions"
                    bare = await client.post(url, json=body)
                    assert bare.status_code == 401  # the port serves only the key holder
                    reply = await client.post(url, json=body, headers=dict(sidecar.headers))
                    assert reply.status_code == 200, reply.text
                    pid: int = reply.json()["x_fake"]["pid"]
                    return pid

            pids = await asyncio.gather(*(pid_of("alpha") for _ in range(5)))
            assert len(set(pids)) == 1  # concurrent first uses shared one start
            assert await pid_of("alpha@precise") == pids[0]  # sampling only: same process
            assert await pid_of("alpha@big") != pids[0]  # load-time flag: its own process
            assert dict(models.request_defaults("alpha@precise")) == {
                "temperature": 0.0,
                "top_k": 1,
            }
            with pytest.raises(UnknownModelError):
                models.resolve("nope")
            assert await models.unload("alpha")
            assert await pid_of("alpha") != pids[0]  # started again on the next lease
            alive = [s.sidecar.pid for s in models._reconciler.supervisor.statuses()]
    assert alive and all(pid is not None and not pid_alive(pid) for pid in alive)


async def test_a_lease_outliving_its_stopped_sidecar_keeps_counts_exact(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    """A lease still held when its sidecar is stopped (the drain outlasted stop_grace) must
    neither crash when it ends nor take a later lease's count of the same key with it (that
    count is what protects the new sidecar from eviction mid-request)."""
    write_model_files(tmp_path, ["alpha"])
    path = tmp_path / "profiles.yaml"
    text = fake_profile(fake_server_bin, tmp_path / "state", {"alpha": ""}, stop_grace="0.3s")
    path.write_text(text)
    async with local_models(path) as models:
        reconciler = models._reconciler
        old_lease = models.lease("alpha")
        old = await old_lease.__aenter__()
        assert await models.unload("alpha")  # drains 0.3 s, then stops it under the lease
        assert reconciler.supervisor.get(old.key) is None
        async with models.lease("alpha") as new:
            assert new.key == old.key
            assert reconciler.leases.in_flight(new.key) == 2  # the old request has not ended yet
            await old_lease.__aexit__(None, None, None)
            assert reconciler.leases.in_flight(new.key) == 1
        assert reconciler.leases.in_flight(new.key) == 0


class SteppedClock:
    """Wall-clock time that a test can move forward (the reconciler's idea of now)."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead

    def advance(self, seconds: float) -> None:
        self.ahead += seconds


@pytest.mark.parametrize("released", ["before-the-restart", "while-it-loads"])
async def test_a_restarted_key_does_not_inherit_an_old_last_use(
    tmp_path: Path, fake_server_bin: Path, released: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease that ends after its sidecar was replaced stamps the key's last use; a sidecar of
    that key started later must count its idle time from its own READY, or a preload with a
    ttl shorter than its load is stopped as idle the moment it is ready."""
    # local_models takes no clock; its reconciler gets this one, so the ttl passes at once
    clock = SteppedClock()
    monkeypatch.setattr(library, "Reconciler", functools.partial(Reconciler, clock=clock))
    write_model_files(tmp_path, ["alpha"])
    ports = port_range()
    slow = "env: {FAKE_LLAMA_LOAD_DELAY: '1.5'}"
    texts = {
        name: fake_profile(
            fake_server_bin,
            tmp_path / "state",
            {"alpha": f"preload: true\nttl: 1s\n{slow}{args}"},
            stop_grace="0.3s",
            ports=ports,
        )
        for name, args in (("a", ""), ("b", "\nargs: [--ctx-size, '1024']"))
    }
    for name, text in texts.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    first, second = (load_profiles(tmp_path / f"{name}.yaml", {}) for name in ("a", "b"))
    async with local_models(first) as models:
        reconciler = models._reconciler
        stops: list[tuple[str, str]] = []
        reconciler.stop_listeners.append(lambda stop, _: stops.append((stop.key, stop.reason)))
        old_lease = models.lease("alpha")
        key = (await old_lease.__aenter__()).key
        reconciler.set_profiles(second)  # alpha's key changes and is stopped under the lease
        await wait_for(lambda: reconciler.supervisor.get(key) is None, what="old alpha stopped")
        if released == "before-the-restart":
            await old_lease.__aexit__(None, None, None)
            clock.advance(1.2)  # longer than the ttl
        released_at = clock()
        reconciler.set_profiles(first)  # the old key is wanted again (preload)
        if released == "while-it-loads":
            await wait_for(lambda: reconciler.supervisor.get(key) is not None, what="respawn")
            await old_lease.__aexit__(None, None, None)

        def ready() -> bool:
            sidecar = reconciler.supervisor.get(key)
            return sidecar is not None and str(sidecar.state) == "ready"

        await wait_for(ready, what="alpha back")
        last_used = reconciler.leases.last_used(key)
        assert last_used is not None and last_used >= released_at + 1.0  # not before READY
        await reconcile_passes(reconciler)  # one began after READY, and saw what it stamped
        assert (key, "idle-ttl") not in stops


async def test_each_sidecar_start_has_its_own_key(tmp_path: Path, fake_server_bin: Path) -> None:
    async with local_models(_profile(tmp_path, fake_server_bin)) as models:
        async with models.lease("alpha") as first:
            old = dict(first.headers)
        assert await models.unload("alpha")
        async with models.lease("alpha") as second, httpx.AsyncClient(trust_env=False) as client:
            assert dict(second.headers) != old
            url = f"{second.url}/v1/models"
            assert (await client.get(url, headers=old)).status_code == 401  # the old key: no
            assert (await client.get(url, headers=dict(second.headers))).status_code == 200
