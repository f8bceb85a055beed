"""An operator's unload of a preload model's sidecar: it stays stopped until a request needs
it (a pass that ran while the process was still exiting used to start it again)."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_helpers import fake_profile, reconcile_passes, running_service, write_model_files

from llamasup.testing.poll import wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_unloaded_preload_sidecar_stays_stopped_until_demanded(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    write_model_files(tmp_path, ["alpha", "beta"])
    models = {"alpha": "preload: true", "beta": "preload: true"}
    (profiles / "p.yaml").write_text(fake_profile(fake_server_bin, tmp_path / "state", models))
    async with running_service(profiles, watch=False) as running:
        supervisor = running.service.supervisor
        await wait_for(
            lambda: sorted(str(s.sidecar.state) for s in supervisor.statuses()) == ["ready"] * 2,
            what="alpha and beta ready",
        )
        reply = await running.client.post("/api/unload", json={"model": "beta"})
        assert reply.status_code == 200
        assert [item["model"] for item in reply.json()["stopped"]] == ["beta"]
        await reconcile_passes(running.service.reconciler, 3)  # several passes
        assert sorted(running.pids()) == ["alpha"]
        status = await running.status()
        rows = {row["model"]: row["state"] for row in status["sidecars"]}
        assert rows == {"alpha": "ready", "beta": "stopped"}

        chat = {"model": "beta", "messages": [{"role": "user", "content": "hi"}]}
        reply = await running.client.post("/v1/chat/completions", json=chat)
        assert reply.status_code == 200, reply.text
        assert sorted(running.pids()) == ["alpha", "beta"]
