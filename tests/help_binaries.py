"""A llama-server stand-in that answers ``--help`` and ``--version`` like a given real build
(a recorded help text) and runs the fake server otherwise."""

from __future__ import annotations

from pathlib import Path

HELP_TEXTS = Path(__file__).parent / "fixtures" / "llama-server-help"


def binary_like(directory: Path, fake_server: Path, help_name: str, build: str) -> Path:
    help_file = HELP_TEXTS / help_name
    script = directory / f"llama-server-{help_file.stem}"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  --help) cat "{help_file}"; exit 0 ;;\n'
        f'  --version) echo "version: 0.0.1 (build {build}, commit recorded)" >&2; exit 0 ;;\n'
        "esac\n"
        f'exec "{fake_server}" "$@"\n'
    )
    script.chmod(0o755)
    return script
