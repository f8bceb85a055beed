"""What a llama-server binary says about itself: its version and its ``--help`` listing.

Read once per binary file and cached, in memory and on disk, by path, size and modification
time (a rebuilt or upgraded binary is read again). Running it takes tens of milliseconds; call
this off the event loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from llamasup.core.paths import cache_root
from llamasup.runtime.locate import binary_version

HELP_TIMEOUT = 10.0
_FORMAT = 1


@dataclass(frozen=True)
class BinaryInfo:
    path: str
    version: str | None
    help: str

    def describe(self) -> str:
        return f"{self.path} ({self.version or 'unknown version'})"


_memory: dict[tuple[str, int, int], BinaryInfo | None] = {}


def _identity(path: Path) -> tuple[str, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (str(path.absolute()), stat.st_size, stat.st_mtime_ns)


def remembered_binary_info(path: Path) -> tuple[bool, BinaryInfo | None]:
    """``(True, binary_info(path))`` if this process already read the binary as it is on
    disk now (one ``stat``, fine on the event loop), else ``(False, None)``."""
    identity = _identity(path)
    if identity is None:
        return True, None
    if identity in _memory:
        return True, _memory[identity]
    return False, None


def binary_info(path: Path) -> BinaryInfo | None:
    """The binary's version and help text; None when it cannot be run or prints no help."""
    identity = _identity(path)
    if identity is None:
        return None
    if identity in _memory:
        return _memory[identity]
    cache = _cache_file(identity)
    info = _read_cache(cache, identity[0])
    if info is None:
        info = _ask(path)
        if info is not None:
            _write_cache(cache, info)
    _memory[identity] = info
    return info


def _ask(path: Path) -> BinaryInfo | None:
    try:
        result = subprocess.run(
            [str(path), "--help"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=HELP_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = result.stdout + result.stderr
    if result.returncode != 0 or "--port" not in text:
        return None  # not a llama-server (a wrapper that refuses --help, a command model)
    return BinaryInfo(str(path.absolute()), binary_version(path), text)


def _cache_file(identity: tuple[str, int, int]) -> Path:
    digest = hashlib.sha256(repr(identity).encode()).hexdigest()[:24]
    return cache_root() / "binaries" / f"{digest}.json"


def _read_cache(cache: Path, path: str) -> BinaryInfo | None:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT or data.get("path") != path:
        return None
    return BinaryInfo(path, data.get("version"), str(data.get("help", "")))


def _write_cache(cache: Path, info: BinaryInfo) -> None:
    data = {"format": _FORMAT, "path": info.path, "version": info.version, "help": info.help}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        staging = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        staging.write_text(json.dumps(data), encoding="utf-8")
        os.replace(staging, cache)
    except OSError:
        pass  # a read-only cache only costs running --help again next time
