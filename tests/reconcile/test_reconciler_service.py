"""The reconciler inside a running Service, against fake sidecars: requests in flight are never
cut by a reload or an eviction, idle sidecars are evicted or expire, and shutdown leaves no
process behind."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from service_helpers import (
    ProfileWriter,
    RunningService,
    chat,
    pid_alive,
    reconcile_passes,
    running_service,
    served_by,
)

from llamasup.planner.types import Stop
from llamasup.testing.poll import wait_for

pytestmark = pytest.mark.anyio

TOKENS = 30
#: a slow stream: TOKENS pieces, 0.1 s apart (about 3 s end to end)
SLOW = f"env:\n  FAKE_LLAMA_STREAM_DELAY: '0.1'\n  FAKE_LLAMA_TOKENS: '{TOKENS}'"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def writer_for(
    tmp_path: Path, fake_server_bin: Path, server_extra: str = "", stop_grace: str = "30s"
) -> ProfileWriter:
    """A profile whose drains (stop_grace) outlast the slow streams, unless told otherwise."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    target = profiles / "p.yaml"
    return ProfileWriter(fake_server_bin, tmp_path, target, server_extra, stop_grace=stop_grace)


@dataclass
class Streamed:
    pid: int | None = None
    pieces: int = 0
    done: bool = False
    error: str | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)


async def stream_chat(
    client: httpx.AsyncClient,
    model: str,
    result: Streamed,
    on_piece: Callable[[Streamed], None] | None = None,
) -> Streamed:
    """A streaming chat completion, read to its end; ``on_piece`` runs at every content piece."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                result.done = True
                continue
            chunk = json.loads(data)
            if "x_fake" in chunk and result.pid is None:
                result.pid = chunk["x_fake"]["pid"]
            if "error" in chunk:
                result.error = chunk["error"]["code"]
                continue
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                result.pieces += 1
                if on_piece is not None:
                    on_piece(result)
    result.finished.set()
    return result


def drained_stop_of(running: RunningService, key: str) -> bool:
    """Whether a pass has decided to stop ``key`` after its requests in flight (drain)."""
    return any(
        isinstance(action, Stop) and action.key == key and action.drain and action.in_flight > 0
        for record in running.service.reconciler.status.recent
        for action in record.plan.actions
    )


def key_of(running: RunningService, model: str) -> str:
    [key] = [s.key for s in running.service.supervisor.statuses() if s.sidecar.model == model]
    return key


@pytest.mark.parametrize("max_sidecars", [1, None], ids=["max-1", "unlimited"])
async def test_edit_waits_for_the_stream_in_flight(
    tmp_path: Path, fake_server_bin: Path, max_sidecars: int | None
) -> None:
    extra = "" if max_sidecars is None else f"max_sidecars: {max_sidecars}"
    writer = writer_for(tmp_path, fake_server_bin, extra)
    writer.write({"alpha": f"preload: true\n{SLOW}"})
    async with running_service(writer.target.parent, watch=False) as running:
        await wait_for(lambda: "alpha" in running.ready_pids(), what="alpha ready")
        old_pid = running.ready_pids()["alpha"]
        old_key = key_of(running, "alpha")
        first_piece = asyncio.Event()
        draining = asyncio.Event()
        seen_while_draining: list[list[int]] = []

        def check(result: Streamed) -> None:
            first_piece.set()
            if draining.is_set():
                assert pid_alive(old_pid)
                seen_while_draining.append(running.sidecar_pids("alpha"))

        streamed = Streamed()
        stream = asyncio.create_task(stream_chat(running.client, "alpha", streamed, check))
        await asyncio.wait_for(first_piece.wait(), 15)
        writer.write({"alpha": f"preload: true\nargs: [--ctx-size, 8192]\n{SLOW}"})
        assert (await running.service.reload("edit")).result == "ok"
        await wait_for(lambda: drained_stop_of(running, old_key), what="a drained stop of alpha")
        assert not stream.done(), "the stream ended before the edit took effect; make it slower"
        draining.set()
        rows = {row["key"]: row for row in (await running.status())["sidecars"]}
        assert (rows[old_key]["state"], rows[old_key]["in_flight"]) == ("draining", 1)
        if max_sidecars is None:
            # no limit: the replacement starts beside the draining one and takes new requests
            answer = await chat(running.client, "alpha")
            assert served_by(answer) != old_pid
            assert not streamed.finished.is_set()
        result = await asyncio.wait_for(stream, 30)
        assert (result.pid, result.pieces, result.done, result.error) == (
            old_pid,
            TOKENS,
            True,
            None,
        )
        assert seen_while_draining, "no piece arrived while alpha was draining"
        if max_sidecars == 1:
            # the room is only freed when the old process is gone: nothing started meanwhile
            assert all(pids == [old_pid] for pids in seen_while_draining), seen_while_draining
        await wait_for(lambda: not pid_alive(old_pid), what="the old alpha gone")
        await wait_for(
            lambda: running.ready_pids().get("alpha") not in (None, old_pid),
            what="the new alpha ready",
        )
        assert served_by(await chat(running.client, "alpha")) == running.ready_pids()["alpha"]


async def test_a_drain_is_bounded_by_stop_grace(tmp_path: Path, fake_server_bin: Path) -> None:
    writer = writer_for(tmp_path, fake_server_bin, stop_grace="1s")
    writer.write({"alpha": f"preload: true\n{SLOW}"})
    async with running_service(writer.target.parent, watch=False) as running:
        await wait_for(lambda: "alpha" in running.ready_pids(), what="alpha ready")
        old_pid = running.ready_pids()["alpha"]
        first_piece = asyncio.Event()
        streamed = Streamed()
        stream = asyncio.create_task(
            stream_chat(running.client, "alpha", streamed, lambda _: first_piece.set())
        )
        await asyncio.wait_for(first_piece.wait(), 15)
        writer.write({"alpha": f"preload: true\nargs: [--ctx-size, 8192]\n{SLOW}"})
        assert (await running.service.reload("edit")).result == "ok"
        result = await asyncio.wait_for(stream, 30)
        # a stream longer than the grace is cut, and the client is told so in-band
        assert result.pieces < TOKENS
        assert (result.done, result.error) == (False, "upstream_disconnected")
        await wait_for(lambda: not pid_alive(old_pid), what="the old alpha gone")
        await wait_for(lambda: running.ready_pids().get("alpha") not in (None, old_pid))


async def test_max_one_sidecar_evicts_idle_and_waits_for_busy(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = writer_for(tmp_path, fake_server_bin, "max_sidecars: 1")
    writer.write({"alpha": SLOW, "beta": ""})
    async with running_service(writer.target.parent) as running:
        alpha_pid = served_by(await chat(running.client, "alpha"))
        # a request for beta evicts the idle alpha
        beta_pid = served_by(await chat(running.client, "beta"))
        await wait_for(lambda: not pid_alive(alpha_pid), what="alpha's process gone")
        assert running.ready_pids() == {"beta": beta_pid}

        # now alpha is busy with a stream: a request for beta must wait for it to end
        streamed = Streamed()
        first_piece = asyncio.Event()
        stream = asyncio.create_task(
            stream_chat(running.client, "alpha", streamed, lambda _: first_piece.set())
        )
        await asyncio.wait_for(first_piece.wait(), 20)
        assert streamed.pid is not None
        alpha_pid = streamed.pid
        assert not pid_alive(beta_pid)  # alpha needed the slot; idle beta was evicted for it
        waited_for_alpha: list[bool] = []

        async def ask_beta() -> int:
            answer = await chat(running.client, "beta")
            waited_for_alpha.append(streamed.finished.is_set())
            return served_by(answer)

        beta = asyncio.create_task(ask_beta())
        await wait_for(
            lambda: running.service.reconciler.waiting_keys() != [], what="beta's request waiting"
        )
        result = await asyncio.wait_for(stream, 30)
        assert (result.pieces, result.done, result.error) == (TOKENS, True, None)
        new_beta = await asyncio.wait_for(beta, 30)
        assert waited_for_alpha == [True]
        assert not pid_alive(alpha_pid)
        assert running.ready_pids() == {"beta": new_beta}


async def test_idle_ttl_stops_and_a_request_brings_it_back(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = writer_for(tmp_path, fake_server_bin)
    writer.write({"quick": "preload: true\nttl: 1s", "steady": "preload: true"})
    async with running_service(writer.target.parent) as running:
        await wait_for(lambda: {"quick", "steady"} <= set(running.ready_pids()), what="ready")
        pids = running.ready_pids()
        await wait_for(lambda: "quick" not in running.pids(), timeout=10, what="quick expired")
        await wait_for(lambda: not pid_alive(pids["quick"]), what="quick's process gone")
        assert running.ready_pids() == {"steady": pids["steady"]}
        status = await running.status()
        rows = status["sidecars"]
        assert isinstance(rows, list)
        assert {row["model"]: row["state"] for row in rows} == {
            "quick": "stopped",
            "steady": "ready",
        }
        # stopped, not forgotten: the next request starts it again
        back = served_by(await chat(running.client, "quick"))
        assert back != pids["quick"]
        # ... and, with nothing else happening afterwards, it idles out again
        await wait_for(lambda: "quick" not in running.pids(), timeout=10, what="expired again")


async def test_a_sidecar_a_request_started_idles_out_on_a_quiet_host(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = writer_for(tmp_path, fake_server_bin)
    writer.write({"quick": "ttl: 1s"})
    async with running_service(writer.target.parent, watch=False) as running:
        await chat(running.client, "quick")  # the only thing that ever happens
        assert "quick" in running.pids()
        await wait_for(lambda: "quick" not in running.pids(), timeout=10, what="quick expired")


async def test_close_leaves_no_sidecar_process(tmp_path: Path, fake_server_bin: Path) -> None:
    writer = writer_for(tmp_path, fake_server_bin, stop_grace="2s")
    writer.write(
        {
            "ready": f"preload: true\n{SLOW}",
            "loading": "preload: true\nenv:\n  FAKE_LLAMA_LOAD_DELAY: '60'",
            "stubborn": "preload: true\nenv:\n  FAKE_LLAMA_IGNORE_SIGTERM: '1'",
        }
    )
    async with running_service(writer.target.parent) as running:
        await wait_for(
            lambda: (
                {"ready", "stubborn"} <= set(running.ready_pids())
                and running.pids().get("loading") is not None
            ),
            what="two ready, one loading",
        )
        pids = [pid for pid in running.pids().values() if pid is not None]
        assert len(pids) == 3
        streamed = Streamed()
        first_piece = asyncio.Event()
        stream = asyncio.create_task(
            stream_chat(running.client, "ready", streamed, lambda _: first_piece.set())
        )
        await asyncio.wait_for(first_piece.wait(), 20)
    # running_service has closed the service: every process was reaped, none is left
    assert [pid for pid in pids if pid_alive(pid)] == []
    stream.cancel()
    await asyncio.gather(stream, return_exceptions=True)


async def test_lowered_limit_evicts_once_the_busy_sidecar_goes_idle(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    """A reload lowers max_sidecars while both sidecars are busy: nothing is cut, and as soon
    as the first stream ends its sidecar is evicted, with no other trigger needed."""
    writer = writer_for(tmp_path, fake_server_bin, "max_sidecars: 2")
    writer.write({"alpha": SLOW, "beta": SLOW})
    async with running_service(writer.target.parent) as running:
        results = {model: Streamed() for model in ("alpha", "beta")}
        pieces = {model: asyncio.Event() for model in results}

        def started(model: str) -> Callable[[Streamed], None]:
            def note(_: Streamed) -> None:
                pieces[model].set()

            return note

        streams = {
            model: asyncio.create_task(
                stream_chat(running.client, model, results[model], started(model))
            )
            for model in results
        }
        for event in pieces.values():
            await asyncio.wait_for(event.wait(), 20)
        writer.server_extra = "max_sidecars: 1"
        writer.write({"alpha": SLOW, "beta": SLOW})
        await wait_for(
            lambda: running.service.profiles.server.max_sidecars == 1, what="limit lowered"
        )
        await running.service.reconciler.reconcile_once()
        notes = running.service.reconciler.status.last.plan.notes  # type: ignore[union-attr]
        assert any(note.startswith("over the limits") for note in notes), notes
        done = await asyncio.wait_for(asyncio.gather(*streams.values()), 30)
        assert all((r.pieces, r.done, r.error) == (TOKENS, True, None) for r in done)
        await wait_for(lambda: len(running.pids()) == 1, what="one sidecar evicted")


async def test_a_model_whose_file_is_missing_evicts_nothing(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = writer_for(tmp_path, fake_server_bin, "max_sidecars: 1")
    writer.write({"alpha": "preload: true", "broken": ""})
    (tmp_path / "broken.gguf").unlink()  # deleted after the profile was written
    async with running_service(writer.target.parent, watch=False) as running:
        await wait_for(lambda: "alpha" in running.ready_pids(), what="alpha ready")
        pid = running.ready_pids()["alpha"]
        body = {"model": "broken", "messages": [{"role": "user", "content": "hi"}]}
        reply = await running.client.post("/v1/chat/completions", json=body)
        assert reply.status_code == 503
        assert "broken.gguf does not exist" in reply.json()["error"]["message"]
        await reconcile_passes(running.service.reconciler)  # one began after the refusal
        assert running.ready_pids() == {"alpha": pid}
        stops = [a for r in running.service.reconciler.status.recent for a in r.plan.actions]
        assert not [a for a in stops if isinstance(a, Stop)]


async def test_a_reload_reaches_settings_of_a_running_sidecar(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    """memory, pinned: settings outside the key keep the process but must count at once."""
    writer = writer_for(tmp_path, fake_server_bin, "memory_budget: 4GiB")
    models = {
        "a": "preload: true\nmemory: 1GiB",
        "b": "preload: true\nmemory: 1GiB",
        "c": "memory: 1GiB",
    }
    writer.write(models)
    async with running_service(writer.target.parent, watch=False) as running:
        await wait_for(lambda: {"a", "b"} <= set(running.ready_pids()), what="a and b ready")
        pids = running.ready_pids()
        writer.write(
            {
                **models,
                "a": "preload: true\nmemory: 2560MiB",
                "b": "preload: true\nmemory: 1GiB\npinned: true",
            }
        )
        assert (await running.service.reload("edit")).result == "ok"
        rows = {row["model"]: row for row in (await running.status())["sidecars"]}
        assert rows["a"]["memory"] == 2560 * 2**20 and rows["a"]["pid"] == pids["a"]
        assert rows["b"]["pinned"] is True
        await chat(running.client, "c")  # 1 GiB more: a (2.5 GiB, idle, not pinned) must go
        await wait_for(lambda: "a" not in running.pids(), what="a evicted for c")
        status = await running.status()
        assert status["limits"]["memory_estimated"] <= 4 * 2**30


async def test_a_pinned_model_the_limits_cannot_hold_shows_as_refused(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = writer_for(tmp_path, fake_server_bin, "memory_budget: 10GiB")
    writer.write({"p": "pinned: true\nmemory: 4GiB", "r": "pinned: true\nmemory: 7GiB"})
    async with running_service(writer.target.parent, watch=False) as running:
        await wait_for(lambda: "p" in running.ready_pids(), what="p (first by id) ready")
        rows = {row["model"]: row for row in (await running.status())["sidecars"]}
        assert rows["r"]["state"] == "refused" and rows["r"]["pid"] is None
        assert "budget" in rows["r"]["last_error"]
        assert "r" not in running.pids()


async def test_a_dry_run_shows_what_a_raised_memory_override_will_evict(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = writer_for(tmp_path, fake_server_bin, "memory_budget: 6GiB")
    models = {"a": "preload: true\nmemory: 2GiB", "b": "preload: true\nmemory: 2GiB"}
    writer.write(models)
    async with running_service(writer.target.parent, watch=False) as running:
        await wait_for(lambda: {"a", "b"} <= set(running.ready_pids()), what="a and b ready")
        raised = writer.text({**models, "a": "preload: true\nmemory: 5GiB"})
        reply = await running.client.post(
            "/api/apply?dry_run=1", json={"files": {writer.target.name: raised}}
        )
        assert reply.status_code == 200, reply.text
        actions = [(a["action"], a["reason"]) for a in reply.json()["plan"]["actions"]]
        assert ("stop", "evicted-memory") in actions
