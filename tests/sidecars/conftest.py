"""Fixtures for sidecar and supervisor tests: a fake llama-server, settings, polling."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from port_slices import PortSlices

from llamasup.sidecars.ports import PortAllocator
from llamasup.sidecars.sidecar import Sidecar
from llamasup.sidecars.types import EventListener, SidecarSettings
from llamasup.testing import write_fake_binary

from .sidecar_helpers import fake_spec

#: 22100-23059: a range private to these tests (see port_slices), away from the service
#: tests' 23100+ and the defaults; each test gets its own slice of 8
_PORTS = PortSlices(22100, 8, 120)


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
    return SidecarSettings(
        state_dir=tmp_path / "state",
        port_range=_PORTS.next(),
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
