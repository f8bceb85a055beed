"""The service tests run on asyncio (uvicorn and the supervisor are asyncio code)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
