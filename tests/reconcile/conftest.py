"""The reconcile tests run on asyncio (the executor and the loop are asyncio code)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
