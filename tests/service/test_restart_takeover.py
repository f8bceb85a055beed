"""A starting llamasup acting on a hand-over file: what it adopts, stops and leaves alone.

The sidecar processes are started here as a previous image of this very process would have
left them (its own children, output in pipes it holds); the hand-over file is written as
that image would have. The real re-exec is in ``test_restart_serve.py``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_helpers import ProfileWriter, reconcile_passes
from sidecars.sidecar_helpers import Detached, pid_alive

from llamasup.profiles.load import load_profiles
from llamasup.profiles.types import Profiles
from llamasup.service import handover_file, listeners, serve
from llamasup.service.app import Service
from llamasup.service.front_server import FrontServer
from llamasup.service.handover_file import Handover, SidecarRecord
from llamasup.service.restart import Restarter
from llamasup.service.uvicorn_settings import uvicorn_config
from llamasup.sidecars.handover import ProcessHandle
from llamasup.sidecars.health import http_status
from llamasup.sidecars.orphans import MARKER, marker_value
from llamasup.sidecars.procfs import start_time
from llamasup.sidecars.types import SidecarState
from llamasup.spec.resolve import Resolver
from llamasup.testing.poll import wait_for

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and pidfds: Linux"),
]


@pytest.fixture
def writer(tmp_path: Path, fake_server_bin: Path) -> ProfileWriter:
    return ProfileWriter(fake_server_bin, tmp_path, tmp_path / "p.yaml")


@pytest.fixture
def processes() -> Iterator[list[Detached]]:
    made: list[Detached] = []
    yield made
    for process in made:
        process.kill()


def key_of(profiles: Profiles, model: str) -> str:
    return Resolver(profiles).resolve(model).spec.key


def first_port(writer: ProfileWriter) -> int:
    return int(writer.ports.split("-")[0])


async def handed_over(
    writer: ProfileWriter, processes: list[Detached], model: str, key: str, port: int, **env: str
) -> SidecarRecord:
    """A fake sidecar of ``model`` as the previous image left it, and its record."""
    api_key = f"key-of-{model}"
    process = Detached(writer.fake_bin, writer.root / f"{model}.gguf", port, key=api_key, **env)
    processes.append(process)

    async def healthy() -> bool:
        return await http_status("127.0.0.1", port, "/health", limit=1.0) == 200

    await wait_for(healthy, what=f"{model}'s fake to be ready")
    started = start_time(process.pid)
    assert started is not None
    return SidecarRecord(
        key=key,
        model=model,
        agent=None,
        agent_flags=(),
        agents=(),
        kind="llama-server",
        health_path="/health",
        argv=(),
        last_used=time.time() - 5,
        process=ProcessHandle(
            pid=process.pid,
            start_time=started,
            port=port,
            pipes=process.handle_pipes(),
            auth_key=api_key,
            started_at=time.time() - 10,
            ready_at=time.time() - 9,
        ),
    )


def handover_of(
    writer: ProfileWriter,
    records: list[SidecarRecord],
    owner: tuple[int, str] | None = None,
) -> tuple[Path, Handover]:
    pid = os.getpid()
    owner_pid, owner_start = owner or (pid, start_time(pid) or "?")
    handover = Handover(
        owner_pid=owner_pid,
        owner_start=owner_start,
        owner_version="0.0.1",
        state_dir=str(writer.state_dir.absolute()),
        written_at=time.time(),
        requested_monotonic=time.monotonic(),
        restarts=3,
        listen_fds=(),
        sidecars=tuple(records),
    )
    path = handover_file.path_in(writer.state_dir)
    handover_file.write(path, handover)
    return path, handover


async def test_unchanged_keys_are_adopted_changed_ones_replaced_after_a_restart(
    writer: ProfileWriter, processes: list[Detached]
) -> None:
    before = {"alpha": "pinned: true", "beta": "pinned: true", "gamma": ""}
    writer.write(before)
    old = load_profiles(writer.target, os.environ)
    after = {"alpha": "pinned: true", "beta": "pinned: true\nargs: [-c, 1024]"}
    writer.write(after)  # beta's load-time flags changed, gamma removed, across the restart
    new = load_profiles(writer.target, os.environ)
    assert key_of(old, "alpha") == key_of(new, "alpha")
    assert key_of(old, "beta") != key_of(new, "beta")
    port = first_port(writer)
    records = [
        await handed_over(writer, processes, "alpha", key_of(old, "alpha"), port),
        await handed_over(writer, processes, "beta", key_of(old, "beta"), port + 1),
        await handed_over(writer, processes, "gamma", key_of(old, "gamma"), port + 2),
    ]
    alpha, beta, gamma = (record.process.pid for record in records)
    path, handover = handover_of(writer, records)

    service = Service(writer.target, new, watch=False)
    await service.take_over(path, handover)
    report = service.last_restart
    assert report is not None and report.in_place and report.restarts == 3
    assert {o.model: o.result for o in report.outcomes} == {
        "alpha": "adopted",
        "beta": "replaced",
        "gamma": "replaced",
    }
    assert not path.exists()
    try:
        await service.start()  # the replaced ones are stopped before anything starts
        assert not pid_alive(beta) and not pid_alive(gamma)
        for pid in (beta, gamma):
            with pytest.raises(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reaped

        def settled() -> dict[str, int] | None:
            statuses = {s.sidecar.model: s.sidecar for s in service.supervisor.statuses()}
            if set(statuses) != {"alpha", "beta"}:
                return None
            if any(s.state is not SidecarState.READY for s in statuses.values()):
                return None
            return {model: s.pid or 0 for model, s in statuses.items()}

        pids = await wait_for(settled, what="alpha adopted and the new beta ready")
        assert pids["alpha"] == alpha  # the same process: not reloaded
        assert pids["beta"] not in (beta, 0)
        rows = {row.model: row for row in service.reconciler.snapshot()}
        assert rows["alpha"].adopted_from == os.getpid() and rows["alpha"].adopted_at
        assert rows["beta"].adopted_at is None
        process = service.process_status()
        assert process["restarts"] == 3
        assert process["last_restart"]["from_version"] == "0.0.1"
        exposition, _ = await service.render_metrics()
        text = exposition.decode()
        assert 'llamasup_sidecar_adoptions_total{result="adopted"} 1.0' in text
        assert 'llamasup_sidecar_adoptions_total{result="replaced"} 2.0' in text
        assert "llamasup_planned_restarts 3.0" in text
    finally:
        await service.close(10)
    assert not pid_alive(alpha)


async def test_a_stale_file_adopts_nothing_and_kills_nothing_that_is_not_ours(
    writer: ProfileWriter, processes: list[Detached]
) -> None:
    writer.write({"alpha": "pinned: true"})
    profiles = load_profiles(writer.target, os.environ)
    key = key_of(profiles, "alpha")
    # the llamasup that wrote the file is dead (it crashed during a restart)
    dead = subprocess.Popen(["true"])
    dead.wait()
    # its sidecar is gone: the pid is free now
    gone = subprocess.Popen(["true"])
    gone.wait()
    # another's pid is now used by an unrelated process
    unrelated = subprocess.Popen(["sleep", "60"])
    # a descriptor the file names, which means something else in this process
    ours_read, ours_write = os.pipe()
    try:
        unrelated_start = start_time(unrelated.pid)
        assert unrelated_start is not None

        def record(pid: int, started: str) -> SidecarRecord:
            return SidecarRecord(
                key=key, model="alpha", agent=None, agent_flags=(), agents=(),
                kind="llama-server", health_path="/health", argv=(), last_used=None,
                process=ProcessHandle(pid, started, port=1, pipes={1: ours_read, 2: ours_write}),
            )  # fmt: skip

        path, handover = handover_of(
            writer,
            [record(gone.pid, "1"), record(unrelated.pid, str(int(unrelated_start) + 1))],
            owner=(dead.pid, "1"),
        )
        service = Service(writer.target, profiles, watch=False)
        await service.take_over(path, handover)
        report = service.last_restart
        assert report is not None and not report.in_place
        assert [o.result for o in report.outcomes] == ["gone", "foreign"]
        assert not path.exists()
        assert unrelated.poll() is None  # never touched
        os.fstat(ours_read)  # a dead llamasup's descriptor numbers are not closed here
        os.fstat(ours_write)
        try:
            await service.start()
            await wait_for(
                lambda: [str(s.sidecar.state) for s in service.supervisor.statuses()] == ["ready"],
                what="alpha started anew",
            )
            assert unrelated.poll() is None
        finally:
            await service.close(10)
    finally:
        unrelated.kill()
        unrelated.wait()
        os.close(ours_read)
        os.close(ours_write)


async def test_a_file_of_another_live_llamasup_is_left_alone(writer: ProfileWriter) -> None:
    writer.write({"alpha": ""})
    profiles = load_profiles(writer.target, os.environ)
    with subprocess.Popen(["sleep", "60"]) as other:
        other_start = start_time(other.pid)
        assert other_start is not None
        path, handover = handover_of(writer, [], owner=(other.pid, other_start))
        service = Service(writer.target, profiles, watch=False)
        await service.take_over(path, handover)
        assert service.last_restart is None
        assert path.exists()  # its file, not ours
        other.kill()


async def test_sidecars_of_this_process_that_no_record_names_are_stopped_at_start(
    writer: ProfileWriter, processes: list[Detached]
) -> None:
    """A hand-over file that could not be read (another version, say) must not leave the
    previous image's sidecars running unknown: they carry this process's own marker."""
    writer.write({"alpha": ""})
    profiles = load_profiles(writer.target, os.environ)
    marker = {MARKER: marker_value(writer.state_dir)}
    leftover = Detached(writer.fake_bin, writer.root / "alpha.gguf", first_port(writer), **marker)
    processes.append(leftover)
    leftover.handle_pipes()  # nobody reads them: closed with the test
    # and one sidecar of another state directory's llamasup (this process too): not ours
    other = Detached(
        writer.fake_bin,
        writer.root / "alpha.gguf",
        first_port(writer) + 1,
        **{MARKER: marker_value(writer.root / "elsewhere")},
    )
    processes.append(other)
    service = Service(writer.target, profiles, watch=False)
    try:
        await service.start()
        assert not pid_alive(leftover.pid)
        with pytest.raises(ChildProcessError):
            os.waitpid(leftover.pid, os.WNOHANG)
        assert pid_alive(other.pid)
    finally:
        await service.close(10)  # the fixture ends the other one


@pytest.mark.parametrize("why", ["the exec fails", "a stop came during the drain"])
async def test_a_restart_that_does_not_exec_serves_on_with_everything_it_had(
    writer: ProfileWriter, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    writer.write({"alpha": "pinned: true"})
    service = Service(writer.target, load_profiles(writer.target, os.environ), watch=False)
    sockets = listeners.bind("127.0.0.1", 0)
    port = listeners.address_of(sockets[0])[1]
    config = uvicorn_config(service.asgi, lifespan="off", limits=lambda: service.front_limits)
    service.restarter = Restarter(["/nonexistent/python", "-m", "llamasup"])
    stopping = asyncio.Event()
    execs: list[Path] = []

    def exec_fails(argv: list[str], path: Path) -> None:
        execs.append(path)
        raise OSError("no such program")

    monkeypatch.setattr(serve, "execute", exec_fails)
    await service.start()
    server = FrontServer(config)
    serving = asyncio.create_task(server.serve(sockets=sockets))
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False)
    try:
        await wait_for(lambda: server.started, what="the front")

        def alpha() -> int | None:
            (status,) = service.supervisor.statuses() or (None,)
            ready = status is not None and status.sidecar.state is SidecarState.READY
            return status.sidecar.pid if ready and status is not None else None

        pid = await wait_for(alpha, what="alpha ready")
        assert (await client.get("/health")).status_code == 200  # a keep-alive connection
        service.restarter.requested_at = time.monotonic()
        if why == "a stop came during the drain":
            stopping.set()
        sockets, connections = await serve._restart(service, server, serving, sockets, stopping)
        assert execs == ([] if stopping.is_set() else [handover_file.path_in(writer.state_dir)])
        assert not handover_file.path_in(writer.state_dir).exists()
        assert len(connections) == 1  # the client's idle connection, never closed
        # serve again, as serve.run does: the same sockets, the connection taken back
        server = FrontServer(config)
        serving = asyncio.create_task(server.serve(sockets=sockets))
        await wait_for(lambda: server.started, what="the front again")
        await server.adopt_connections(connections)
        answer = await client.get("/api/status")  # on the same connection as before
        assert answer.status_code == 200
        assert answer.json()["process"]["restarts"] == 0
        assert alpha() == pid  # still supervised, watched and ready
        assert not service.restarter.requested.is_set()
        await reconcile_passes(service.reconciler)  # reconciling again
    finally:
        await client.aclose()
        server.request_exit()
        await asyncio.wait({serving}, timeout=10)
        await service.close(10)
