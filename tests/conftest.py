"""Session fixtures: a real llama-server binary, the tiny model, and the fake server.

The tiers mean what they say: unit tests are pure, integration tests run the fake
llama-server, and only tests marked ``e2e`` run the real one. ``pytest -m "not e2e"`` must
pass on a host with no llama-server at all (``scripts/check-tiers.sh`` runs it that way), so a
test that asks for the real binary without the marker is a collection error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator
from pathlib import Path

import pytest

from llamasup.errors import RuntimeNotFoundError
from llamasup.runtime.install import install
from llamasup.runtime.locate import resolve_binary
from llamasup.testing import tiny_model_path, write_fake_binary

#: fixtures that hand a test the real llama-server
REAL_BINARY_FIXTURES = frozenset({"llama_server_bin"})


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A module (or class) with tests that run the real llama-server but lack the e2e mark
    fails to collect: a collection error, which pytest-xdist reports like any other (an
    exception from a collection hook in a worker would only crash that worker)."""
    report = yield
    if not report.passed:
        return report
    unmarked = [
        node.nodeid
        for node in report.result
        if isinstance(node, pytest.Item)
        and REAL_BINARY_FIXTURES & set(getattr(node, "fixturenames", ()))
        and node.get_closest_marker("e2e") is None
    ]
    if unmarked:
        report.outcome = "failed"
        report.longrepr = (
            "these tests run the real llama-server (through the llama_server_bin fixture) "
            "but are not marked e2e; mark them @pytest.mark.e2e so that "
            '`pytest -m "not e2e"` needs no llama-server:\n  ' + "\n  ".join(unmarked)
        )
        report.result = []
    return report


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
