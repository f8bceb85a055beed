"""Arguments of ``llamasup doctor`` (run by :mod:`llamasup.cli.doctor`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llamasup.cli.commands import LazyHandler
from llamasup.cli.commands.profiles import add_output_flag


def register(commands: Any) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check this host against a profile set; exit 0 no failures, 1 failures",
        description="Check the profiles, the llama-server binary, its flags and its devices "
        "(--list-devices: GPU offload the profile asks for but the build cannot do fails), "
        "the host's GPU tools, server.memory_budget against free device memory, model files, "
        "commands, ports, the listen address, the state directory and llama.cpp's "
        "system config file. Each line: ok|warn|FAIL  CHECK: DETAIL, with a fix for problems.",
    )
    doctor.add_argument(
        "path",
        nargs="?",
        type=Path,
        help="profile file or directory (default: $LLAMASUP_PROFILES or ./profiles)",
    )
    add_output_flag(doctor)
    doctor.set_defaults(handler=LazyHandler("llamasup.cli.doctor:run_doctor"))
