"""Contention inside a running Service, against fake sidecars: a waiting model drains a busy
one after max_wait without cutting its stream, new requests for the drained model wait their
turn, status and metrics say so; a request's keep_alive unloads or keeps its sidecar."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from service_helpers import chat, pid_alive, running_service, served_by

from llamasup.testing.poll import wait_for

from .test_reconciler_service import SLOW, TOKENS, Streamed, key_of, stream_chat, writer_for

pytestmark = pytest.mark.anyio

CONTENDED = "max_sidecars: 1\nscheduling:\n  max_wait: 300ms"


async def test_a_waiting_model_drains_a_busy_one_after_max_wait_and_nothing_is_cut(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = writer_for(tmp_path, fake_server_bin, CONTENDED)
    writer.write({"alpha": SLOW, "beta": ""})
    async with running_service(writer.target.parent) as running:
        first_piece = asyncio.Event()
        streamed = Streamed()
        stream = asyncio.create_task(
            stream_chat(running.client, "alpha", streamed, lambda _: first_piece.set())
        )
        await asyncio.wait_for(first_piece.wait(), 20)
        alpha_key = key_of(running, "alpha")
        beta = asyncio.create_task(chat(running.client, "beta"))

        async def alpha_row() -> dict[str, object]:
            rows = (await running.status())["sidecars"]
            return next(row for row in rows if row["key"] == alpha_key)

        def drained() -> bool:
            views = running.service.reconciler.snapshot()
            return any(v.key == alpha_key and v.state == "draining" for v in views)

        await wait_for(drained, what="alpha drained for beta")
        draining = await alpha_row()
        assert draining["state"] == "draining"
        assert "drained for beta" in str(draining["drain"])
        assert not streamed.finished.is_set(), "drained before its stream ended: no wait at all"

        # a new request for alpha waits for its turn instead of joining the drained sidecar
        late_alpha = asyncio.create_task(chat(running.client, "alpha"))
        await wait_for(
            lambda: running.service.reconciler.demands.waiting_count(alpha_key) == 1,
            what="the late alpha request waiting",
        )
        row = await alpha_row()
        assert row["waiting"] == 1 and isinstance(row["oldest_wait"], float)

        result = await asyncio.wait_for(stream, 30)
        assert (result.pieces, result.done, result.error) == (TOKENS, True, None)
        beta_answer = await asyncio.wait_for(beta, 30)
        assert served_by(beta_answer) != streamed.pid
        # alpha comes back for the request that waited (beta drains after max_wait in turn)
        late = await asyncio.wait_for(late_alpha, 30)
        assert served_by(late) not in (streamed.pid, served_by(beta_answer))

        metrics = (await running.client.get("/metrics")).text
        assert 'llamasup_sidecar_stops_total{reason="contention"}' in metrics
        assert 'llamasup_swaps_total{model="alpha"} 1.0' in metrics
        assert 'llamasup_queue_length{model="alpha"}' in metrics


async def test_keep_alive_zero_unloads_its_sidecar_once_idle(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = writer_for(tmp_path, fake_server_bin)
    writer.write({"alpha": ""})
    async with running_service(writer.target.parent) as running:
        pid = served_by(await chat(running.client, "alpha", headers={"x-llamasup-keep-alive": "0"}))

        def stops() -> list[str]:
            return [
                action.reason
                for record in running.service.reconciler.status.recent
                for action in record.plan.stops
            ]

        # the pass is recorded once its stop is done: wait for the record, then the pid
        await wait_for(lambda: "keep-alive" in stops(), what="a keep-alive stop")
        await wait_for(lambda: not pid_alive(pid), what="alpha unloaded right after")


async def test_keep_alive_outlasts_the_ttl_and_a_bad_one_is_refused(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = writer_for(tmp_path, fake_server_bin)
    writer.write({"alpha": "ttl: 100ms"})
    async with running_service(writer.target.parent) as running:
        body = {
            "model": "alpha",
            "keep_alive": "1h",
            "messages": [{"role": "user", "content": "x"}],
        }
        reply = await running.client.post("/v1/chat/completions", json=body)
        assert reply.status_code == 200
        pid = served_by(reply.json())
        key = key_of(running, "alpha")
        keep = running.service.reconciler.leases.keep_until(key)
        last = running.service.reconciler.leases.last_used(key)
        assert keep is not None and last is not None and keep - last == pytest.approx(3600)
        # a pass after the ttl: the sidecar stays, because the request asked it to
        await wait_for(lambda: time.time() > last + 0.3, what="the ttl passed")
        plan = await running.service.reconciler.reconcile_once()
        assert not plan.stops and pid_alive(pid)
        bad = await running.client.post("/v1/chat/completions", json={**body, "keep_alive": "soon"})
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "invalid_keep_alive"


async def test_ad_hoc_flags_that_fail_leave_no_rows_behind(
    tmp_path: Path, fake_server_bin: Path
) -> None:
    writer = writer_for(
        tmp_path,
        fake_server_bin,
        "agent_flags: {enabled: true, allow_load_flags: [--ctx-size]}\n"
        "restart: {backoff: 50ms, max_failures: 2}",
    )
    writer.write({"broken": "env:\n  FAKE_LLAMA_CRASH_AT_START: '3'"})
    async with running_service(writer.target.parent) as running:
        for size in range(100, 120):
            reply = await running.client.post(
                "/v1/chat/completions",
                json={"model": "broken", "messages": [{"role": "user", "content": "x"}]},
                headers={"X-Agent-Flags": f"--ctx-size {size}"},
            )
            assert reply.status_code == 503, reply.text

        def settled() -> bool:
            views = running.service.reconciler.snapshot()
            return not [v for v in views if v.model == "broken"]

        await wait_for(settled, what="the failed ad-hoc sidecars forgotten")
        ad_hoc = [o for _, o in running.service.reconciler.registry.origins() if o.extra]
        assert ad_hoc == []
        assert running.service.supervisor.statuses() == []
