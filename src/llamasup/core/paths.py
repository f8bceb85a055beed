"""Where llamasup keeps things on a host: its cache (builds, generated models) and its state."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def cache_root() -> Path:
    """``$LLAMASUP_CACHE_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/llamasup``."""
    configured = os.environ.get("LLAMASUP_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "llamasup"


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME/llamasup``, else ``~/.local/state/llamasup``."""
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "llamasup"
