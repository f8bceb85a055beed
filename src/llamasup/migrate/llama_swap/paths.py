"""Relative paths in a llama-swap ``cmd``: llama-swap starts programs in its own working
directory, so ``./bin/llama-server`` and ``-m models/x.gguf`` resolve there. In a profile a
relative path resolves against the profile file, so the import writes them absolute,
resolved against the directory llama-swap ran in (``--workdir``, by default the directory
the import runs in), and says so.
"""

from __future__ import annotations

import ntpath
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WorkDir:
    """llama-swap's working directory."""

    path: Path

    def resolve(self, raw: str, what: str, warn: Callable[[str, str], None]) -> str:
        """``raw`` made absolute if llama-swap read it relative to its working directory.

        A program without a directory part is looked up on PATH, so only one with a slash is
        relative; a model path is relative whenever it is not absolute.
        """
        if raw.startswith(("~", "${env.")) or posixpath.isabs(raw) or ntpath.isabs(raw):
            return raw
        if what == "program" and "/" not in raw and "\\" not in raw:
            return raw
        resolved = posixpath.normpath(posixpath.join(self.path.as_posix(), raw))
        warn(
            "cmd",
            f"{what} {raw} is relative to llama-swap's working directory: written as "
            f"{resolved} (from --workdir {self.path})",
        )
        return resolved
