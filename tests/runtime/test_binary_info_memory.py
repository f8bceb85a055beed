"""``remembered_binary_info``: what a sidecar start may take on the event loop, without
running the binary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llamasup.runtime.binary_info import binary_info, remembered_binary_info

SCRIPT = """#!/bin/sh
case "$1" in
  --help) echo "  --port PORT   port to listen on"; exit 0;;
  --version) echo "version: 1 (abc)" >&2; exit 0;;
esac
exit 1
"""


def test_only_a_binary_read_before_and_unchanged_since_is_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMASUP_CACHE_DIR", str(tmp_path / "cache"))
    binary = tmp_path / "llama-server"
    binary.write_text(SCRIPT)
    binary.chmod(0o755)
    assert remembered_binary_info(binary) == (False, None)
    info = binary_info(binary)
    assert info is not None and "--port" in info.help
    assert remembered_binary_info(binary) == (True, info)
    # rebuilt (another modification time): asked again, off the loop
    stat = binary.stat()
    os.utime(binary, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert remembered_binary_info(binary) == (False, None)
    # nothing there: nothing to ask either
    assert remembered_binary_info(tmp_path / "absent") == (True, None)
