"""A progress bar with an ETA on stderr (tqdm: already installed with gguf, which llamasup
depends on for its memory estimates). Units already in a resumed result file count as done
from the start, so the ETA covers only what is left."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm


class Progress:
    """``advance()`` once per finished unit; ``note(text)`` shows what runs now."""

    def __init__(
        self,
        total: int,
        *,
        done: int = 0,
        unit: str = "cell",
        enabled: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        # enabled None: only on a terminal, so logs and CI output stay plain
        self._bar = tqdm(
            total=total,
            initial=done,
            unit=unit,
            file=stream or sys.stderr,
            disable=(not (stream or sys.stderr).isatty()) if enabled is None else not enabled,
            dynamic_ncols=True,
            smoothing=0.1,
        )

    def note(self, text: str) -> None:
        self._bar.set_postfix_str(text, refresh=True)

    def advance(self, count: int = 1) -> None:
        self._bar.update(count)

    def write(self, text: str) -> None:
        """A line above the bar (the bar redraws below it)."""
        self._bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self._bar.close()
