"""The whole service on a real socket with fake sidecars: a first request starts a sidecar,
a profile edit restarts only the model it changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_helpers import fake_profile, running_service, write_model_files

from llamasup.testing.poll import wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_edit_restarts_only_the_changed_model(tmp_path: Path, fake_server_bin: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    write_model_files(tmp_path, ["alpha", "beta"])
    state = tmp_path / "state"
    models = {"alpha": "preload: true", "beta": "preload: true"}
    (profiles / "p.yaml").write_text(fake_profile(fake_server_bin, state, models))
    async with running_service(profiles) as running:
        await wait_for(lambda: all(running.pids().get(m) for m in ("alpha", "beta")))
        before = running.pids()
        reply = await running.client.post(
            "/v1/chat/completions",
            json={"model": "alpha", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert reply.status_code == 200, reply.text
        models["beta"] = "preload: true\nargs: [--ctx-size, 1024]"
        (profiles / "p.yaml").write_text(fake_profile(fake_server_bin, state, models))
        await wait_for(lambda: running.pids().get("beta") not in (None, before["beta"]))
        after = running.pids()
        assert after["alpha"] == before["alpha"]
        assert after["beta"] != before["beta"]
        status = await running.status()
        assert status["profiles"]["last_reload"]["result"] == "ok"
