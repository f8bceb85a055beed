"""Arguments of ``llamasup completion SHELL`` and of the hidden ``llamasup __complete`` helper
the scripts call (both run by :mod:`llamasup.cli.completion`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llamasup.cli.commands import LazyHandler

SHELLS = ("bash", "zsh", "fish")


def register(commands: Any) -> None:
    completion = commands.add_parser(
        "completion",
        help="print a bash, zsh or fish completion script",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print a completion script for SHELL: commands, options, and model ids and "
        "agents from the local profile set (-f PATH on the command line, else "
        "$LLAMASUP_PROFILES, ./profiles or ./profiles.yaml).",
        epilog="load it now, or for every new shell:\n"
        "  bash  source <(llamasup completion bash)\n"
        "        llamasup completion bash > ~/.local/share/bash-completion/completions/llamasup\n"
        "  zsh   source <(llamasup completion zsh)   (after compinit)\n"
        "        llamasup completion zsh > ~/.zfunc/_llamasup   (~/.zfunc on $fpath)\n"
        "  fish  llamasup completion fish | source\n"
        "        llamasup completion fish > ~/.config/fish/completions/llamasup.fish",
    )
    completion.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")
    completion.set_defaults(handler=LazyHandler("llamasup.cli.completion:run_completion"))

    # what the scripts call at completion time; not in --help, not completed itself
    helper = commands.add_parser("__complete")
    helper.add_argument("kind", choices=("models", "agents"))
    helper.add_argument("path", nargs="?", type=Path)
    helper.set_defaults(handler=LazyHandler("llamasup.cli.completion:run_complete"))
