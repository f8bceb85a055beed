"""Session fixtures: a real llama-server binary, the tiny model, and the fake server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from llamasup.errors import RuntimeNotFoundError
from llamasup.runtime.install import install
from llamasup.runtime.locate import resolve_binary
from llamasup.testing import tiny_model_path, write_fake_binary


def _report(message: str) -> None:
    # straight to the real stderr: a first build takes minutes and must not look like a hang
    print(f"[llamasup runtime install] {message}", file=sys.__stderr__, flush=True)


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    """The real llama-server: resolved like llamasup does, else built once into the cache."""
    try:
        return resolve_binary(None, os.environ).path
    except RuntimeNotFoundError:
        # never skip: CI runs `llamasup runtime install` first; elsewhere we pay once here
        return install(progress=_report)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return tiny_model_path()


@pytest.fixture(scope="session")
def fake_server_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_binary(tmp_path_factory.mktemp("fake-bin"))
