"""The llama-server binaries a profile set names, as the host they are validated on has them.

A profile's flags are checked against the binary that will run them when that binary can be
found and run here; profiles are often validated elsewhere (in CI, on a laptop), and then only
llamasup's own flag table applies.
"""

from __future__ import annotations

from collections.abc import Mapping

from llamasup.errors import LlamasupError
from llamasup.flags.dialect import BinaryFlags, binary_flags
from llamasup.runtime.binary_info import binary_info
from llamasup.runtime.locate import resolve_binary


class BinaryCatalog:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self._found: dict[str, BinaryFlags | None] = {}

    def flags_for(self, configured: str | None) -> BinaryFlags | None:
        """What the binary ``configured`` resolves to says about its flags (None: not here)."""
        key = configured or ""
        if key not in self._found:
            found: BinaryFlags | None = None
            try:
                path = resolve_binary(configured, self._environ).path
            except LlamasupError:
                path = None
            info = None if path is None else binary_info(path)
            if info is not None:
                found = binary_flags(info)
            self._found[key] = found
        return self._found[key]
