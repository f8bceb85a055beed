"""The event loop ``llamasup serve`` runs on: uvloop where it is installed, else asyncio's.

uvicorn's ``loop="uvloop"`` only applies when uvicorn creates the loop itself (``uvicorn.run``);
``serve`` runs uvicorn's ``Server.serve()`` inside a loop of its own, so it picks the loop
here. uvloop comes with ``uvicorn[standard]`` on Linux and macOS; on Windows (or a minimal
install) the standard loop runs instead. Status shows which (``process.event_loop``).
"""

from __future__ import annotations

import asyncio
import importlib
import logging

logger = logging.getLogger("llamasup")


def runner(*, prefer_uvloop: bool = True) -> asyncio.Runner:
    """An ``asyncio.Runner`` on uvloop if it can be imported (and is wanted), else asyncio."""
    if prefer_uvloop:
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            logger.debug("uvloop is not installed: serving on the asyncio event loop")
        else:
            return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """``uvloop`` or ``asyncio``: the implementation of ``loop`` (default: the running one;
    ``none`` outside of one)."""
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return "none"
    current = loop
    return "uvloop" if type(current).__module__.startswith("uvloop") else "asyncio"
