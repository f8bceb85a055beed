"""Byte sizes as people read them, for reasons, notes and status."""

from __future__ import annotations

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30


def format_bytes(size: int) -> str:
    """``12.0 GiB``, ``300.0 MiB``, ``512 B``: one decimal, binary units."""
    if size >= GIB:
        return f"{size / GIB:.1f} GiB"
    if size >= MIB:
        return f"{size / MIB:.1f} MiB"
    return f"{size} B"
