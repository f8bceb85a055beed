"""Fixtures for sidecar and supervisor tests: a fake llama-server, settings, polling."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from llamasup.sidecars.ports import PortAllocator
from llamasup.sidecars.sidecar import Sidecar
from llamasup.sidecars.types import EventListener, SidecarSettings
from llamasup.testing import write_fake_binary

from .sidecar_helpers import fake_spec

#: a range private to these tests, outside the ephemeral range (where any client socket on
#: the host may sit); each test gets its own slice so a slow exit elsewhere cannot collide
_BASE_PORT = 22100
_SLICE = 8
_counter = iter(range(10_000))


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    """Plain asyncio, and uvloop, which uvicorn picks when installed (its transports and
    child handling differ)."""
    return ("asyncio", {"use_uvloop": request.param == "uvloop"})


@pytest.fixture
def fake_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_binary(tmp_path_factory.mktemp("bin"))


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF fake model for the fake server")
    return path


@pytest.fixture
def settings(tmp_path: Path) -> SidecarSettings:
    slot = next(_counter) % 60
    first = _BASE_PORT + slot * _SLICE
    return SidecarSettings(
        state_dir=tmp_path / "state",
        port_range=(first, first + _SLICE - 1),
        load_timeout=10.0,
        health_interval=0.2,
        health_timeout=1.0,
        stop_grace=2.0,
    )


@pytest.fixture
def make_sidecar(
    fake_binary: Path, model_file: Path, settings: SidecarSettings
) -> Iterator[Callable[..., Sidecar]]:
    """Build sidecars on the fake; any still running at the end are killed."""
    made: list[Sidecar] = []

    def make(
        env: Mapping[str, str] | None = None,
        *,
        ports: PortAllocator | None = None,
        on_event: EventListener | None = None,
        **overrides: object,
    ) -> Sidecar:
        the_settings = replace(settings, **overrides) if overrides else settings  # type: ignore[arg-type]
        allocator = ports or PortAllocator(*the_settings.port_range)
        sidecar = Sidecar(
            fake_spec(model_file, env),
            str(fake_binary),
            the_settings,
            allocator,
            on_event=on_event,
        )
        made.append(sidecar)
        return sidecar

    yield make
    for sidecar in made:
        sidecar.abandon()
