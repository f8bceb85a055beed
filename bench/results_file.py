"""bench/RESULTS.md: a benchmark run with ``--write`` replaces its own ``## `` section."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def write_section(heading: str, section: str, results: Path = RESULTS) -> None:
    """Replace the section that starts at ``heading`` (up to the next ``## `` heading) with
    ``section``, or append it; other sections and a blank line before the next are kept."""
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    body = section.rstrip("\n") + "\n"
    start = text.find(heading + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + body + ("\n" + text[end + 1 :] if end >= 0 else "")
    results.write_text(text.rstrip("\n") + "\n")
