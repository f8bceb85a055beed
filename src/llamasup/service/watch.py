"""Watching the profile path and asking for a reload.

The watch covers the directory (for a single file, its parent), so editors that save by
rename and Kubernetes ConfigMap mounts that swap a ``..data`` symlink are both seen. Events
are debounced briefly and every batch causes one reload; the reload itself compares content
revisions, so a spurious event changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, awatch

logger = logging.getLogger(__name__)

#: how long events are gathered into one batch (ms); the edit-to-reload latency budget is 250
DEBOUNCE_MS = 60
STEP_MS = 20


def _relevant(path: Path, single_file: str | None) -> Callable[[Change, str], bool]:
    def accept(_change: Change, changed: str) -> bool:
        name = Path(changed).name
        if single_file is None:
            return name.endswith((".yaml", ".yml")) or name.startswith("..")
        return name == single_file or name.startswith("..")

    return accept


def watch_target(path: Path) -> tuple[Path, str | None]:
    """The directory to watch, and the file name to care about (None: any profile file)."""
    if path.is_dir():
        return path, None
    return path.parent, path.name


async def watch_profiles(
    path: Path,
    reload: Callable[[str], Awaitable[object]],
    *,
    debounce_ms: int = DEBOUNCE_MS,
) -> None:
    """Reload on every change under ``path`` until cancelled."""
    target, single_file = watch_target(path)
    logger.info("watching %s for profile changes", target)
    async for changes in awatch(
        target,
        watch_filter=_relevant(path, single_file),
        debounce=debounce_ms,
        step=STEP_MS,
        recursive=True,
    ):
        logger.debug("profile change: %s", sorted(str(p) for _, p in changes))
        await reload("watch")
