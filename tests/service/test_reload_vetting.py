"""A profile change whose sidecars could not start on this host is refused before it acts: a
typo in ``binary:`` or a missing model file must not stop working sidecars to replace them
with ``failed`` ones. Refused like an invalid profile: located errors in status, the last good
set keeps serving, an apply gets 422."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_helpers import chat, running_service, served_by

from llamasup.testing.poll import wait_for
from service.test_hot_reload import (
    THREE,
    adopted,
    all_ready,
    assert_settled,
    directory_writer,
    preloaded,
    revision_of,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def line_of(text: str, line: str) -> int:
    return text.splitlines().index(line) + 1


async def test_a_binary_typo_is_refused_and_every_model_keeps_serving(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = directory_writer(tmp_path, fake_server_bin)
    writer.write(preloaded())
    async with running_service(writer.target.parent) as running:
        before = await all_ready(running)
        store = running.service.store
        good = store.current.revision
        typo = f"{fake_server_bin}-typo"
        text = writer.text(preloaded()).replace(f"binary: {fake_server_bin}", f"binary: {typo}")
        writer.target.write_text(text)
        await wait_for(lambda: store.last_reload.result == "error", what="the reload refused")
        [error] = store.last_reload.errors
        where = (str(writer.target), line_of(text, f"  binary: {typo}"), "server.binary")
        assert (error.file, error.line, error.path) == where
        assert f"does not exist: {typo}" in error.message
        assert "(needed to start alpha, beta, gamma)" in error.message
        status = await running.status()
        assert status["profiles"]["revision"] == good
        assert status["profiles"]["last_reload"]["errors"] == [error.as_dict()]
        await assert_settled(running)
        assert running.ready_pids() == before
        for model in THREE:
            assert served_by(await chat(running.client, model)) == before[model]
        # an apply of the same text, and an explicit reload, are refused the same way
        reply = await running.client.post("/api/apply", json={"files": {"p.yaml": text}})
        assert reply.status_code == 422, reply.text
        assert reply.json()["errors"] == [error.as_dict()]
        assert (await running.client.post("/api/reload")).status_code == 422
        assert store.current.revision == good
        assert running.ready_pids() == before


async def test_a_missing_model_file_is_refused_until_it_exists(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = directory_writer(tmp_path, fake_server_bin)
    writer.write(preloaded())
    async with running_service(writer.target.parent) as running:
        before = await all_ready(running)
        store = running.service.store
        moved = tmp_path / "beta-v2.gguf"
        text = writer.text(preloaded()).replace(str(tmp_path / "beta.gguf"), str(moved))
        writer.target.write_text(text)
        await wait_for(lambda: store.last_reload.result == "error", what="the reload refused")
        [error] = store.last_reload.errors
        where = (str(writer.target), line_of(text, f"    path: {moved}"), "models.beta.path")
        assert (error.file, error.line, error.path) == where
        assert error.message == f"the model file {moved} does not exist (needed to start beta)"
        await assert_settled(running)
        assert running.ready_pids() == before
        assert served_by(await chat(running.client, "beta")) == before["beta"]
        # once the file is there, the same text is accepted and only beta is replaced
        moved.write_bytes(b"GGUF fake model")
        result = await running.service.reload("sighup")
        assert result.result == "ok", result
        await wait_for(
            lambda: running.ready_pids().get("beta") not in (None, before["beta"]),
            what="beta replaced",
        )
        after = await all_ready(running)
        assert (after["alpha"], after["gamma"]) == (before["alpha"], before["gamma"])


async def test_only_what_a_change_starts_or_replaces_is_checked(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = directory_writer(tmp_path, fake_server_bin)
    writer.write({"alpha": "preload: true", "beta": "preload: true"})
    async with running_service(writer.target.parent) as running:
        before = await all_ready(running, ("alpha", "beta"))
        store = running.service.store
        # a new on-demand model whose file is not there yet: nothing starts, nothing refused
        text = writer.text({"alpha": "preload: true", "beta": "preload: true", "gamma": ""})
        (tmp_path / "gamma.gguf").unlink()
        writer.target.write_text(text)
        await adopted(running, revision_of(writer.target.parent))
        assert [w.path for w in store.current.warnings] == ["models.gamma.path"]
        # a new preload model without its file would start (and fail) at once: refused
        models = {"alpha": "preload: true", "beta": "preload: true", "gamma": ""}
        text = writer.text({**models, "delta": "preload: true"})
        (tmp_path / "delta.gguf").unlink()
        writer.target.write_text(text)
        await wait_for(lambda: store.last_reload.result == "error", what="the reload refused")
        assert [e.path for e in store.last_reload.errors] == ["models.delta.path"]
        # a model whose file went away since it started is left alone by a change to another
        models = {"alpha": "preload: true", "beta": "preload: true\nargs: [--ctx-size, 1024]"}
        text = writer.text(models)
        (tmp_path / "alpha.gguf").unlink()
        writer.target.write_text(text)
        await adopted(running, revision_of(writer.target.parent))
        await wait_for(
            lambda: running.ready_pids().get("beta") not in (None, before["beta"]),
            what="beta replaced",
        )
        assert running.ready_pids()["alpha"] == before["alpha"]
